"""Docker reference grammar and normalization."""

from __future__ import annotations

import pytest

from kbuild.errors import UsageError
from kbuild.layerstore import Reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "full", "familiar", "api_host"),
    [
        ("nginx", "docker.io/library/nginx:latest", "nginx:latest", "registry-1.docker.io"),
        ("nginx:1.25", "docker.io/library/nginx:1.25", "nginx:1.25", "registry-1.docker.io"),
        ("library/nginx", "docker.io/library/nginx:latest", "nginx:latest",
         "registry-1.docker.io"),
        ("docker.io/nginx", "docker.io/library/nginx:latest", "nginx:latest",
         "registry-1.docker.io"),
        ("index.docker.io/user/app:v1", "docker.io/user/app:v1", "user/app:v1",
         "registry-1.docker.io"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest", "registry-1.docker.io"),
        ("localhost/app", "localhost/app:latest", "localhost/app:latest", "localhost"),
        ("localhost:5000/team/app:v2", "localhost:5000/team/app:v2",
         "localhost:5000/team/app:v2", "localhost:5000"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", "127.0.0.1:5000/app:latest",
         "127.0.0.1:5000"),
        ("registry.example.com/a/b/c:tag_1.0-x", "registry.example.com/a/b/c:tag_1.0-x",
         "registry.example.com/a/b/c:tag_1.0-x", "registry.example.com"),
        (f"nginx@{D}", f"docker.io/library/nginx@{D}", f"nginx@{D}", "registry-1.docker.io"),
        (f"nginx:1@{D}", f"docker.io/library/nginx:1@{D}", f"nginx:1@{D}",
         "registry-1.docker.io"),
        ("my-reg.io:443/x__y/z.w-v", "my-reg.io:443/x__y/z.w-v:latest",
         "my-reg.io:443/x__y/z.w-v:latest", "my-reg.io:443"),
    ],
)
def test_parse_normalizes(text: str, full: str, familiar: str, api_host: str) -> None:
    ref = Reference.parse(text)
    assert str(ref) == full
    assert ref.familiar == familiar
    assert ref.api_host == api_host
    assert Reference.parse(str(ref)) == ref


def test_fields_and_with_tag() -> None:
    ref = Reference.parse(f"localhost:5000/app:v1@{D}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "localhost:5000", "app", "v1", D)
    assert str(ref.with_tag("v2")) == "localhost:5000/app:v2"
    assert ref.with_tag("v2").digest is None
    assert Reference.parse("nginx").tag == "latest"
    assert Reference.parse(f"nginx@{D}").tag is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Nginx", "lowercase"),
        ("docker.io/Library/nginx", "lowercase"),
        ("nginx:", "tag"),
        ("nginx:-bad", "tag"),
        ("nginx:" + "a" * 129, "tag"),
        ("nginx@sha256:abc", "sha256"),
        ("nginx@md5:" + "a" * 32, "algorithm"),
        ("a" * 64, "image ID"),
        ("foo//bar", "path component"),
        ("foo/bar_", "path component"),
        ("-reg.io/app", "registry"),
        ("has space", "whitespace"),
        ("reg.io:abc/app", "registry"),
        ("x/" + "a" * 260, "longer"),
    ],
)
def test_bad_references(text: str, why: str) -> None:
    with pytest.raises(UsageError) as info:
        Reference.parse(text)
    assert why in str(info.value)
    assert repr(text)[:20].strip("'") in str(info.value) or text == ""
