"""imageList files, --image-list and exclusions."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.builder.collect.lists import Exclusions, scan_image_list
from kbuild.errors import ImageCollectError, UsageError


def test_image_list_lines_comments_and_sources() -> None:
    pinned = "ghcr.io/b/c@sha256:" + "a" * 64
    text = f"# operators' images\nquay.io/op/a:1\n\n  {pinned}  # pinned\n"
    found = scan_image_list(text, "manifests/imageList", None)
    assert [(f.ref, f.source.line) for f in found] == [
        ("quay.io/op/a:1", 2), (pinned, 4)]
    assert all(not f.candidate and f.source.detail == "imageList" for f in found)


def test_image_list_bad_entry_names_file_and_line() -> None:
    with pytest.raises(ImageCollectError, match=r"application/apps/x/imageList:2 \(app x"
                                                r", imageList\): 'not an image' is not"):
        scan_image_list("a:1\nnot an image\n", "application/apps/x/imageList", "x")


@pytest.mark.parametrize(("entry", "ref", "excluded"), [
    ("nginx", "docker.io/library/nginx:latest", True),
    ("docker.io/library/nginx:latest", "nginx", True),
    ("nginx:1.27", "nginx", False),
    ("quay.io/org/*", "quay.io/org/a:1", True),
    ("quay.io/org/*", "quay.io/other/a:1", False),
    ("*:debug", "ghcr.io/x/y:debug", True),
])
def test_exclusions(entry: str, ref: str, excluded: bool) -> None:
    assert Exclusions([(entry, "test")]).excluded(ref) is excluded


def test_exclusion_files(tmp_path: Path) -> None:
    listed = tmp_path / "ignored"
    listed.write_text("# skip these\nbusybox:1.36\n")
    ex = Exclusions.from_files([listed], ["quay.io/*"])
    assert ex.excluded("docker.io/library/busybox:1.36") and ex.excluded("quay.io/a/b:1")
    listed.write_text("ok:1\nBAD REF\n")
    with pytest.raises(UsageError, match=rf"{listed}:2: 'BAD REF' is not an image reference"):
        Exclusions.from_files([listed])
    with pytest.raises(UsageError, match=r"--ignored-image-list .*missing"):
        Exclusions.from_files([tmp_path / "missing"])
