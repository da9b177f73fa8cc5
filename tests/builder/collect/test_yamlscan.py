"""The YAML scanner, data-driven: data/yaml/NAME.yaml is scanned, NAME.expected lists its finds."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.builder.collect.yamlscan import scan_yaml
from kbuild.errors import ImageCollectError
from kbuild.layerstore import ImageSource

DATA = Path(__file__).parent / "data" / "yaml"


def _where(file: str) -> object:
    return lambda line, what: ImageSource(file, line, "app1", what)


def _expected(path: Path) -> list[tuple[str, int, bool, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            ref, n, cand, detail = (x.strip() for x in line.split("|"))
            rows.append((ref, int(n), cand == "yes", detail))
    return rows


@pytest.mark.parametrize("case", sorted(p.stem for p in DATA.glob("*.yaml")))
def test_scan_finds_what_the_data_says(case: str) -> None:
    found = scan_yaml((DATA / f"{case}.yaml").read_text(), _where(f"{case}.yaml"),  # type: ignore[arg-type]
                      name=f"{case}.yaml")
    got = [(f.ref, f.source.line, f.candidate, f.source.detail) for f in found]
    assert got == _expected(DATA / f"{case}.expected")
    assert all(f.source.file == f"{case}.yaml" and f.source.app == "app1" for f in found)


@pytest.mark.parametrize(("text", "message"), [
    ("kind: Pod\nspec:\n  containers:\n\t- name: a\n", r"m\.yaml:4: not valid YAML"),
    ("kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n"
     "    image: registry.local/app:${TAG}\n",
     r"m\.yaml:6 \(app app1, Pod/p container a\): image 'registry.local/app:\$\{TAG\}' "
     r"is a template that kbuild cannot render"),
    ("kind: Job\nspec:\n  template:\n    spec:\n      containers:\n      - name: j\n"
     "        image: \"{{ .Values.image }}\"\n",
     r"m\.yaml:7 .*is a template that kbuild cannot render"),
    ("kind: Pod\nspec:\n  containers:\n  - name: a\n    image: app:__KBUILD_UNSET_Tag__\n",
     r"image 'app:\$\{Tag\}' uses the variable Tag, which has no value at build time"),
    ("kind: Pod\nspec:\n  containers:\n  - name: a\n    image: Not_Valid:1\n",
     r"m\.yaml:5 .*'Not_Valid:1' is not a valid image reference"),
])
def test_bad_input_is_an_error_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ImageCollectError, match=message) as info:
        scan_yaml(text, _where("m.yaml"), name="m.yaml")  # type: ignore[arg-type]
    assert info.value.exit_code == 2


def test_test_hooks_can_be_skipped() -> None:
    text = ("kind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\n"
            "spec: {containers: [{name: t, image: 'busybox:1'}]}\n")
    from kbuild.builder.collect.helm import is_test_hook

    assert [f.ref for f in scan_yaml(text, _where("x"), name="x")] == ["busybox:1"]  # type: ignore[arg-type]
    assert scan_yaml(text, _where("x"), name="x", skip_doc=is_test_hook) == []  # type: ignore[arg-type]
