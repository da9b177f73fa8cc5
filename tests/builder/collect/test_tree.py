"""Scanning the files an image adds: templates, YAML, charts (real helm), imageList files."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.builder.collect.helm import Helm
from kbuild.builder.collect.tree import AppPlan, ScanPlan, scan_tree
from kbuild.errors import BuildError, ImageCollectError

from .charts import write_chart

POD = ("kind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n"
       "    image: {image}\n")


def _found(root: Path, plan: ScanPlan, helm: Path | None) -> list[tuple[str, str, str]]:
    found = scan_tree(root, plan, Helm(str(helm) if helm else "/nonexistent/helm"))
    return [(f.ref, str(f.source), "?" if f.candidate else "") for f in found]


def test_everything_an_app_image_adds(tmp_path: Path, helm: Path) -> None:
    root = tmp_path / "tree"
    app = root / "application/apps/web"
    write_chart(app, "web", "127.0.0.1:5000/web/server", "from-values", test_hook=True,
                annotation=["quay.io/web/migrations:3"])
    write_chart(app / "charts" / "cache", "cache", "127.0.0.1:5000/web/cache", "7")
    write_chart(root / "charts/tools", "tools", "ghcr.io/tools/cli", "2.0")
    (root / "manifests").mkdir(parents=True)
    (root / "manifests/db.yaml.tmpl").write_text(
        POD.format(name="db", image="postgres:{{ .PgVersion }}"))
    (root / "manifests/imageList").write_text("quay.io/op/operator:1.0\n")
    (root / "etc").mkdir()
    (root / "etc/extra.yaml").write_text(POD.format(name="x", image="busybox:1.36"))
    plan = ScanPlan(
        apps=[AppPlan("web", "application/apps/web",
                      ["helm upgrade --install web . --set image.tag=$WEB_TAG"], {"WEB_TAG": "9"})],
        cmds=["kubectl apply -f etc/extra.yaml"], env={"PgVersion": "16"})
    assert _found(root, plan, helm) == [
        # the app's chart as its command installs it: APPENV's tag, the subchart, no test hook
        ("127.0.0.1:5000/web/cache:7",
         "application/apps/web (app web, web/charts/cache/templates/deployment.yaml: "
         "Deployment/web-cache container main)", ""),
        ("127.0.0.1:5000/web/server:9",
         "application/apps/web (app web, web/templates/deployment.yaml: "
         "Deployment/web-web container main)", ""),
        ("quay.io/web/migrations:3",
         "application/apps/web/Chart.yaml:5 (app web, helm.sh/images annotation)", ""),
        # a chart no command installs: its own values
        ("ghcr.io/tools/cli:2.0", "charts/tools (tools/templates/deployment.yaml: "
                                  "Deployment/tools-tools container main)", ""),
        ("busybox:1.36", "etc/extra.yaml:6 (Pod/x container c)", ""),
        ("postgres:16", "manifests/db.yaml.tmpl:6 (Pod/db container c)", ""),
        ("quay.io/op/operator:1.0", "manifests/imageList:1 (imageList)", ""),
    ]


def test_a_variable_without_value_fails_only_where_an_image_needs_it(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "manifests").mkdir(parents=True)
    (root / "manifests/cm.yaml.tmpl").write_text(
        "kind: ConfigMap\nmetadata: {name: c}\ndata: {disk: \"{{ .Disk }}\"}\n")
    assert _found(root, ScanPlan(), None) == []
    (root / "manifests/pod.yaml.tmpl").write_text(POD.format(name="p", image="app:{{ .Tag }}"))
    with pytest.raises(ImageCollectError, match=r"manifests/pod.yaml.tmpl:6 .*'app:\$\{Tag\}' "
                                                r"uses the variable Tag"):
        _found(root, ScanPlan(), None)
    (root / "manifests/pod.yaml.tmpl").write_text(
        POD.format(name="p", image='app:{{ .Tag | default "1" }}'))
    assert _found(root, ScanPlan(), None)[0][0] == "app:1"


def test_a_set_from_an_unset_variable_fails_with_its_name(tmp_path: Path, helm: Path) -> None:
    root = tmp_path / "tree"
    write_chart(root / "application/apps/web", "web", "127.0.0.1:5000/web", "1")
    plan = ScanPlan(apps=[AppPlan("web", "application/apps/web",
                                  ["helm install web . --set image.tag=$TAG"])])
    with pytest.raises(ImageCollectError, match=r"uses the variable TAG, which has no value"):
        _found(root, plan, helm)


def test_charts_that_cannot_render_are_errors(tmp_path: Path, helm: Path) -> None:
    root = tmp_path / "tree"
    write_chart(root / "charts/broken", "broken", "a", "1", dependencies=["missing"])
    with pytest.raises(ImageCollectError, match=r"(?s)charts/broken: helm template cannot "
                                                r"render the chart .*missing") as info:
        _found(root, ScanPlan(), helm)
    assert info.value.exit_code == 2
    with pytest.raises(BuildError, match=r"charts/broken: rendering this chart .*needs helm") as e:
        _found(root, ScanPlan(), None)
    assert "build-helm.sh" in (e.value.hint or "")


def test_a_values_file_the_command_names_must_be_there(tmp_path: Path, helm: Path) -> None:
    root = tmp_path / "tree"
    write_chart(root / "application/apps/web", "web", "a", "1")
    plan = ScanPlan(apps=[AppPlan("web", "application/apps/web",
                                  ["helm install web . -f prod.yaml"])])
    with pytest.raises(ImageCollectError, match=r"uses the values file "
                                                r"application/apps/web/prod.yaml"):
        _found(root, plan, helm)
    (root / "application/apps/web/prod.yaml").write_text("image: {tag: prod}\n")
    assert _found(root, plan, helm)[0][0] == "a:prod"
