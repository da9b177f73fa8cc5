"""Another image on a running cluster: the container images earlier images
carried stay served (their ``registry/``-only layers stay mounted below the
new image's), because pods of the earlier apps still run them."""

from __future__ import annotations

from pathlib import Path

from kbuild.layerstore import ImageMeta, Store, TarEntry, pack_layer
from kbuild.runtime.image import inspect_image
from kbuild.runtime.mount import unit_text
from kbuild.runtime.phases.provision import send_layers
from kbuild.runtime.runevents import Message
from tests.runtime.recording import Facts

from .harness import DEMO_CF as CF
from .harness import carried_image, scenario

BLOB = "registry/docker/registry/v2/blobs/sha256/ab/" + "ab" * 32 + "/data"


def _old_image(store: Store) -> tuple[str, list[str]]:
    """An earlier app image: a files layer and a registry-only layer; its
    manifest digest and its layers' hex digests (files, registry)."""
    files = pack_layer(store, [TarEntry("application/apps/old/old.yaml", "file", 0o644,
                                        data=b"kind: ConfigMap\n")])
    reg = pack_layer(store, [TarEntry(BLOB, "file", 0o644, data=b"blob")])
    carried = carried_image("docker.io/team/old:1")
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Labels": ImageMeta(images=[carried]).labels()}}
    desc = store.write_image(config, [files, reg])
    store.tag("old:1", desc)
    return desc.digest, [x.hex for x in inspect_image(store, "old:1").layers]


def test_the_rootfs_keeps_the_registry_layers_of_earlier_images(tmp_path: Path) -> None:
    sc = scenario(tmp_path, CF, Facts.from_data({}))
    old, (files_hex, reg_hex) = _old_image(sc.ctx.opts.store)
    sc.ctx.state.images = [old]
    sc.ctx.state.manifest = old
    sc.ctx.load_image(None)
    image = sc.ctx.image
    assert image is not None and sc.ctx.generation  # another image: a generation of its own

    layers = sc.ctx.rootfs_layers()
    assert [x.hex for x in layers] == [reg_hex] + [x.hex for x in image.layers]
    assert files_hex not in {x.hex for x in layers}  # the old app's files go
    # the old image's carried images are served too (the new image's first)
    assert [c.name for c in sc.ctx.served_images()] == [
        *(c.name for c in image.images), "docker.io/team/old:1"]
    # the mount unit stacks it lowest; the host claims it and is asked for it
    unit = unit_text(sc.ctx.paths, layers, sc.ctx.generation)
    lowers = unit.split("lowerdir=")[1].split(",")[0].split(":")
    assert lowers[-1].endswith("/lower/0") and len(lowers) == len(layers)
    host = sc.ctx.cf.cluster.all_hosts()[0]
    send_layers(sc.ctx, host)
    cmds = sc.commands["10.0.0.2"]
    claim = next(c for c in cmds if c.startswith("[prepare-data-root.sh]"))
    assert claim.split()[3:] == [x.hex for x in layers]
    asked = next(c for c in cmds if c.startswith("[present-layers.sh]"))
    assert reg_hex in asked.split()


def test_an_earlier_image_the_store_lost_is_named(tmp_path: Path) -> None:
    sc = scenario(tmp_path, CF, Facts.from_data({}))
    lost = "sha256:" + "11" * 32
    sc.ctx.state.images = [lost]
    sc.ctx.state.manifest = lost
    sc.ctx.load_image(None)
    assert sc.ctx.image is not None
    assert sc.ctx.rootfs_layers() == sc.ctx.image.layers
    assert sc.ctx.served_images() == sc.ctx.image.images
    said = [e.text for e in sc.events if isinstance(e, Message)]
    assert any(f"image {lost[:19]} the cluster ran before is not in the local store" in t
               for t in said), said
