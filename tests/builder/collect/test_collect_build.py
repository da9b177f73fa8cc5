"""The collection in real builds: a real registry, the real helm, the layers it writes.

Images come from the build's own store, or only from a docker-registry on
127.0.0.1 (pushed there from another store), never from elsewhere: the
builds are given a fetch function only where a test registry serves.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from kbuild.builder.events import StepDone
from kbuild.errors import ImageCollectError
from kbuild.layerstore import Descriptor, ImageMeta, Platform, Store, carried_images
from kbuild.registry import ClientOptions, fetch_image, pull_image, push_image
from tests.fixtures.registry import RegistryServer, free_port
from tests.registry.images import make_image, random_bytes

from ..util import Built, run_build, write_tree
from .charts import write_chart

pytestmark = pytest.mark.integration

POD = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
       "  template:\n    spec:\n      containers:\n      - name: c\n        image: {image}\n")


def fetcher(tls_verify: bool = True) -> Any:
    """What ``kbuild build`` gives the builder: kbuild.registry.fetch_image."""
    def fetch(store: Store, ref: str, *, platforms: list[Platform], quick: bool = False
              ) -> Descriptor:
        return fetch_image(store, ref, platforms=platforms, quick=quick,
                           options=ClientOptions(tls_verify=tls_verify))
    return fetch


def _images_step(built: Built) -> StepDone:
    return next(e for e in built.events if isinstance(e, StepDone) and e.step_id == "images")


def _meta(built: Built) -> ImageMeta:
    return ImageMeta.read(built.config["config"]["Labels"])


def _registry_members(built: Built, n: int = -1) -> list[str]:
    layer = built.layers[n]
    with built.store.open_blob(layer["digest"]) as f:
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(f.read())).read()
    return tarfile.open(fileobj=io.BytesIO(data)).getnames()


def _blob_files(members: list[str]) -> set[str]:
    return {"sha256:" + m.split("/")[-2] for m in members if m.endswith("/data")}


def _blobs_of(store: Store, digest: str) -> set[str]:
    manifest = store.read_json(digest)
    return {digest, manifest["config"]["digest"], *(x["digest"] for x in manifest["layers"])}


@pytest.fixture()
def elsewhere(tmp_path: Path) -> Store:
    """Another machine's store: images pushed to the test registry from here."""
    return Store(tmp_path / "elsewhere")


def test_image_only_in_a_registry_is_fetched_pinned_and_served(
        store: Store, ctx: Path, elsewhere: Store, open_registry: RegistryServer,
        tmp_path: Path) -> None:
    api = f"{open_registry.host}/team/api:1"
    make_image(elsewhere, "api:1", [{"bin/api": b"api" * 1000}, {"etc/api": b"conf"}])
    pushed = push_image(elsewhere, "api:1", api)
    make_image(store, "local/web:2", [{"bin/web": b"web"}])
    write_tree(ctx, {
        "manifests/api.yaml": POD.format(name="api", image=api),
        "manifests/web.yaml": "# the web tier\n" + POD.format(name="web", image="local/web:2"),
    })
    kubefile = 'FROM scratch\nCOPY manifests manifests\nCMDS ["kubectl apply -f manifests/"]\n'
    built = run_build(store, ctx, kubefile, tags=["app:1"], fetch=fetcher())
    images = {c.name: c for c in _meta(built).images}
    assert set(images) == {api, "docker.io/local/web:2"}
    assert images[api].digest == pushed.digest  # pinned by digest
    assert [str(s) for s in images[api].sources] == [
        "manifests/api.yaml:9 (Deployment/api container c)"]
    assert str(images["docker.io/local/web:2"].sources[0]).startswith("manifests/web.yaml:10 ")
    assert images[api].size == sum(elsewhere.blob_size(d) for d in _blobs_of(elsewhere,
                                                                            pushed.digest))
    assert carried_images(store, "app:1") == _meta(built).images
    # registry/ is distribution's storage: a real registry serves it as it is
    rootfs = built.rootfs(tmp_path / "rootfs")
    served = RegistryServer(tmp_path / "served", free_port())
    served.workdir.mkdir()
    (rootfs / "registry").rename(served.storage)
    served.start()
    try:
        got = pull_image(Store(tmp_path / "puller"), f"{served.host}/team/api:1")
        assert got.digest == pushed.digest
        pull_image(Store(tmp_path / "puller"), f"{served.host}/local/web:2")
    finally:
        served.stop()

    # rebuilt with nothing changed: every step cached, the registry not asked again
    requests = len(open_registry.access_log())
    again = run_build(store, ctx, kubefile, tags=["app:1"], fetch=fetcher())
    assert _images_step(again).cached and again.cached == [True, True]
    assert again.result.manifest.digest == built.result.manifest.digest
    assert len(open_registry.access_log()) == requests


def test_unresolvable_reference_fails_naming_image_and_file(
        store: Store, ctx: Path, open_registry: RegistryServer) -> None:
    gone = f"{open_registry.host}/nobody/has-this:1"
    write_tree(ctx, {"app/deploy.yaml": POD.format(name="x", image=gone),
                     "app/cr.yaml": "kind: Widget\nmetadata: {name: w}\n"
                                    f"spec: {{widgetImage: {open_registry.host}/maybe/not:1}}\n"})
    kubefile = "FROM scratch\nAPP web local://app\n"
    with pytest.raises(ImageCollectError) as info:
        run_build(store, ctx, kubefile, tags=["broken:1"], fetch=fetcher())
    text = str(info.value)
    assert f"{gone}, wanted by application/apps/web/deploy.yaml:9 (app web" in text
    assert "not found" in text and info.value.exit_code == 2
    assert "maybe/not" not in text  # a custom resource's guess is dropped, not an error
    assert [str(r) for r, _ in store.images()] == []  # nothing tagged
    # excluded explicitly, the build goes through and carries nothing
    built = run_build(store, ctx, kubefile, tags=["ok:1"], fetch=fetcher(),
                      exclude_images=[gone])
    assert _meta(built).images == []


def test_app_image_layer_holds_only_blobs_lower_layers_lack(store: Store, ctx: Path) -> None:
    shared = {"lib/shared.so": random_bytes(200_000)}
    a = make_image(store, "local/a:1", [shared, {"bin/a": random_bytes(20_000)}])
    b = make_image(store, "local/b:1", [shared, {"bin/b": random_bytes(30_000)}])
    base = run_build(store, ctx, "FROM scratch\nKUBEVERSION >=1.30\nIMAGE local/a:1\n",
                     tags=["base:1"])
    assert _blob_files(_registry_members(base)) == _blobs_of(store, a.digest)
    write_tree(ctx, {"m/both.yaml": POD.format(name="a", image="local/a:1") + "---\n"
                     + POD.format(name="b", image="local/b:1")})
    app = run_build(store, ctx, "FROM base:1\nCOPY m manifests\n", tags=["app:1"])
    b_only = _blobs_of(store, b.digest) - _blobs_of(store, a.digest)
    assert _blob_files(_registry_members(app)) == b_only
    members = _registry_members(app)
    assert any("repositories/local/b/_manifests/tags/1/current/link" in m for m in members)
    assert not any("repositories/local/a/" in m for m in members)
    images = {c.name: c for c in _meta(app).images}
    assert list(images) == ["docker.io/local/a:1", "docker.io/local/b:1"]
    # the base's image gained the app's file as a source
    assert [s.file for s in images["docker.io/local/a:1"].sources] == [
        "Kubefile", "manifests/both.yaml"]
    # bytes the app image adds for b: about b's own blobs, not the 200 kB layer it shares
    added = app.layers[-1]["size"]
    assert sum(store.blob_size(d) for d in b_only) < added < 60_000


def test_rebuild_does_not_rescan_rerender_or_refetch(
        store: Store, ctx: Path, helm: Path, tmp_path: Path, elsewhere: Store,
        open_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "helm.log"
    wrapper = tmp_path / "helm"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {helm} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("KBUILD_HELM", str(wrapper))
    repo = f"{open_registry.host}/charts/web"
    make_image(elsewhere, "w:1", [{"w": b"w"}])
    push_image(elsewhere, "w:1", f"{repo}:from-appenv")
    write_chart(ctx / "chart", "web", repo, "from-values")
    write_tree(ctx, {"notes.yaml": "kind: ConfigMap\nmetadata: {name: n}\n"})
    kubefile = ("FROM scratch\nAPP web local://chart\nAPPENV web TAG=from-appenv\n"
                'APPCMDS web ["helm install web . --set image.tag=$TAG"]\n'
                "COPY notes.yaml manifests/notes.yaml\n")
    first = run_build(store, ctx, kubefile, fetch=fetcher())
    assert [c.name for c in _meta(first).images] == [f"{repo}:from-appenv"]
    renders, requests = log.read_text().count("template"), len(open_registry.access_log())
    assert renders == 1
    again = run_build(store, ctx, kubefile, fetch=fetcher())
    assert _images_step(again).cached and all(again.cached)
    assert log.read_text().count("template") == renders
    assert len(open_registry.access_log()) == requests
    # a manifest changes (no image in it): scanned and rendered again, same images,
    # their layer reused, no fetch
    (ctx / "notes.yaml").write_text("kind: ConfigMap\nmetadata: {name: changed}\n")
    third = run_build(store, ctx, kubefile, fetch=fetcher())
    assert log.read_text().count("template") == renders + 1
    assert third.cached[-1] and third.layers[-1] == first.layers[-1]
    assert len(open_registry.access_log()) == requests


def test_lists_and_the_kubefile_name_images_no_file_names(
        store: Store, ctx: Path, tmp_path: Path) -> None:
    for name in ("op/operator:1", "op/worker:1", "op/extra:1", "op/ignored:1"):
        make_image(store, name, [{"f": name.encode()}])
    write_tree(ctx, {"op/deploy.yaml": POD.format(name="op", image="op/operator:1"),
                     "op/imageList": "# started by the operator\nop/worker:1\n"})
    listed = tmp_path / "extra.txt"
    listed.write_text("op/extra:1\nnot/here:1\n")
    ignored = tmp_path / "ignored.txt"
    ignored.write_text("docker.io/not/*\n")
    built = run_build(store, ctx, "FROM scratch\nAPP op local://op\n"
                      "IMAGE --app=op op/ignored:1\n", image_lists=[listed],
                      ignored_image_lists=[ignored], exclude_images=["op/ignored:1"])
    assert [(c.name, [str(s) for s in c.sources]) for c in _meta(built).images] == [
        ("docker.io/op/operator:1",
         ["application/apps/op/deploy.yaml:9 (app op, Deployment/op container c)"]),
        ("docker.io/op/worker:1", ["application/apps/op/imageList:2 (app op, imageList)"]),
        ("docker.io/op/extra:1", [f"{listed}:1 (--image-list)"]),
    ]
    built = run_build(store, ctx, "FROM scratch\nAPP op local://op\n"
                      "IMAGE --app=op op/ignored:1\n", ignored_image_lists=[ignored])
    assert [str(s) for s in _meta(built).images[-1].sources] == ["Kubefile:3 (app op, IMAGE)"]


def test_tls_registry_with_auth_as_for_pull(
        store: Store, ctx: Path, elsewhere: Store, tls_registry: RegistryServer,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kbuild.registry import login
    from tests.fixtures.registry import PASSWORD, USER

    monkeypatch.setenv("KBUILD_CERTS_D", str(tls_registry.certs_d))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    ref = f"{tls_registry.host}/secure/app:1"
    make_image(elsewhere, "s:1", [{"s": b"s"}])
    write_tree(ctx, {"m.yaml": POD.format(name="s", image=ref)})
    kubefile = "FROM scratch\nCOPY m.yaml manifests/m.yaml\nCMD kubectl apply -f manifests\n"
    with pytest.raises(ImageCollectError, match=r"(?s)secure/app:1, wanted by manifests/m.yaml:9"
                                                r".*authentication required"):
        run_build(store, ctx, kubefile, fetch=fetcher())
    login(tls_registry.host, USER, PASSWORD)
    pushed = push_image(elsewhere, "s:1", ref)
    built = run_build(store, ctx, kubefile, fetch=fetcher())
    assert [(c.name, c.digest) for c in _meta(built).images] == [(ref, pushed.digest)]
    assert "PASSWORD" not in json.dumps(built.config) and PASSWORD not in json.dumps(built.config)
