"""The shared image formats: OCI platforms and the cluster-image metadata reader."""

from __future__ import annotations

import pytest

from kbuild.errors import StoreError, UsageError
from kbuild.layerstore import (
    META_KEY,
    AppInfo,
    ImageMeta,
    Platform,
    default_cmds,
    index_platforms,
    oci_arch,
    pick_manifest,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("arm64", "linux/arm64"),
        ("x86_64", "linux/amd64"),
        ("linux/aarch64", "linux/arm64"),
        ("armv7l", "linux/arm/v7"),
        ("linux/armv7l/v6", "linux/arm/v6"),
        ("Linux/ARM64/V8", "linux/arm64/v8"),
    ],
)
def test_platform_parse_normalizes(text: str, expected: str) -> None:
    assert str(Platform.parse(text)) == expected


@pytest.mark.parametrize("text", ["linux", "a/b/c/d", "linux//v7", "/amd64"])
def test_platform_parse_rejects_naming_the_text(text: str) -> None:
    with pytest.raises(UsageError) as info:
        Platform.parse(text)
    assert repr(text) in str(info.value)


def test_platform_none_is_host_and_oci_arch() -> None:
    assert Platform.parse(None) == Platform.host()
    assert Platform.host().os == "linux"
    assert oci_arch(" x86_64\n") == "amd64" and oci_arch("armv7l") == "arm"
    assert oci_arch("sparc64") == "sparc64"


def test_platform_matches_and_pick() -> None:
    index = {"manifests": [
        "junk",
        {"digest": "a", "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": "b", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "c"},
    ]}  # fmt: skip
    assert pick_manifest(index, Platform.parse("linux/arm/v7")) is None
    assert pick_manifest(index, Platform.parse("linux/arm"))["digest"] == "a"  # type: ignore[index]
    assert pick_manifest(index, Platform.parse("linux/arm64/v8"))["digest"] == "b"  # type: ignore[index]
    assert not Platform.parse("linux/amd64").matches(None)
    assert index_platforms(index) == ["linux/arm/v6", "linux/arm64"]
    assert Platform.parse("linux/arm/v7").to_dict() == {
        "os": "linux", "architecture": "arm", "variant": "v7"}  # fmt: skip


def test_image_meta_read_is_strict_and_from_labels_lenient() -> None:
    meta = ImageMeta(apps={"web": AppInfo("web", type="kube", files=["a.yaml"])}, launch=["web"])
    text = meta.to_json()
    # label first, else the manifest annotation
    assert ImageMeta.read({}, {META_KEY: text}).launch == ["web"]
    other = ImageMeta(cmds=["true"]).to_json()
    assert ImageMeta.read({META_KEY: other}, {META_KEY: text}).cmds == ["true"]
    assert ImageMeta.read({}, None) == ImageMeta()
    for bad, why in (("{nope", "not JSON"), ("[1]", "not a JSON object"),
                     ('{"apps": [{"type": "kube"}]}', "schema version 1")):  # fmt: skip
        with pytest.raises(StoreError, match=why) as info:
            ImageMeta.read({META_KEY: bad}, what="image x:1")
        assert str(info.value).startswith("image x:1: label io.kbuild.image.v1")
        assert ImageMeta.from_labels({META_KEY: bad}) == ImageMeta()
    assert default_cmds(meta.apps["web"]) == ["kubectl apply -f a.yaml"]
    assert default_cmds(AppInfo("h", type="helm")) == []
