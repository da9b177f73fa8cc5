"""What every phase of one life-cycle operation shares: the Clusterfile,
connections, the local state, the image and its driver, the hosts worked on.

A :class:`Context` is made per operation (run, join, apply, delete) and
closed at its end. Phases read and extend it; the
:class:`~kbuild.runtime.phases.manager.Manager` records in its state which
phases finished.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kbuild.errors import ClusterError, KbuildError
from kbuild.layerstore import CarriedImage, Store
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Clusterfile, Host, PluginDoc
from kbuild.runtime.contract import ClusterView, host_env
from kbuild.runtime.driver import ClusterDriver, NullDriver, driver_by_kind, select_driver
from kbuild.runtime.executor import Credentials, Executor
from kbuild.runtime.image import ImageInfo, Layer, inspect_image
from kbuild.runtime.layers import LayerScan, final_plugins, scan_image, scan_layer
from kbuild.runtime.mount import ClusterPaths, is_mounted
from kbuild.runtime.pool import ConnectionPool
from kbuild.runtime.preflight import HostFacts
from kbuild.runtime.provider import Provider
from kbuild.runtime.redact import Redactor, clusterfile_secrets
from kbuild.runtime.runevents import HostStatus, Message, Progress, emit
from kbuild.runtime.state import HostRecord, StateDir, state_root

__all__ = ["Context", "Options", "credentials"]


@dataclass
class Options:
    """How a life-cycle operation reaches hosts, reports, and which drivers and
    providers it may use (the CLI passes kbuild's own)."""

    store: Store
    progress: Progress | None = None
    accept_changed_host_key: bool = False
    connect_timeout: float = 10.0
    retries: int = 2
    state_root: Path | None = None
    max_workers: int = 16
    drivers: Sequence[type[ClusterDriver]] = ()
    providers: Mapping[str, Provider] = field(default_factory=dict)


def credentials(host: Host) -> Credentials:
    """The connection credentials of a Clusterfile host."""
    ssh = host.ssh
    return Credentials(
        user=ssh.user or "root",
        password=ssh.passwd,
        key_file=ssh.pk,
        passphrase=ssh.pk_passwd,
        port=ssh.port or 22,
    )


class Context:
    """Connections, image, driver and state of one life-cycle operation."""

    def __init__(self, cf: Clusterfile, opts: Options) -> None:
        self.cf = cf
        self.opts = opts
        self.redactor = Redactor(clusterfile_secrets(cf))
        self.progress = self.redactor.progress(opts.progress)
        root = opts.state_root or state_root()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.pool = ConnectionPool(
            known_hosts=root / "known_hosts",
            accept_changed_host_key=opts.accept_changed_host_key,
            connect_timeout=opts.connect_timeout,
            retries=opts.retries,
            local="auto",
        )
        self.sd = StateDir(cf.cluster.name, root)
        self.state = self.sd.load_state()
        self.paths = ClusterPaths(cf.cluster.data_root, cf.cluster.name)
        self.image: ImageInfo | None = None
        """The image for the lead master's platform: its labels, plugins and launch
        commands are the cluster's; its manifest is the one the state records."""
        self.scans: list[LayerScan] = []
        self._earlier: list[ImageInfo] | None = None
        self.platforms: dict[str, tuple[ImageInfo, list[LayerScan]]] = {}
        """Per architecture of a mixed cluster's hosts, that platform's image and
        scans (empty for a cluster of one architecture)."""
        self.image_plugins: list[PluginDoc] = []
        self._driver: ClusterDriver = NullDriver()
        self.facts: dict[str, HostFacts] = {}
        self.targets: list[Host] = []
        """The hosts this operation works on (converge: those not finished)."""
        self.generation = ""
        """The image's generation tag: "" for the cluster's first image, else 12
        hex digits of its manifest digest (its own upper dir, its own launch)."""
        self.scaleup = False
        """The converge adds hosts to a cluster that finished installing."""
        self.failed: dict[str, KbuildError] = {}
        """Hosts dropped from the rest of a keep-going list, with their error."""
        self.join_env: dict[str, str] = {}
        """What join-cluster handed to join-host (its exports and the joiners)."""
        self._lead: Host | None = None
        self.params: dict[str, object] = {}
        """What a driver's flow was asked (backup file, target image…)."""
        self.results: dict[str, object] = {}
        """What a flow hands back to its caller."""
        self._connected: set[str] = set()
        self._mounted: dict[str, bool] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every connection."""
        self.pool.close()

    @property
    def driver(self) -> ClusterDriver:
        """The cluster driver of the image (the null driver until one is chosen)."""
        return self._driver

    @driver.setter
    def driver(self, driver: ClusterDriver) -> None:
        self._driver = driver
        self.redactor.add(driver.secrets(self))

    # ------------------------------------------------------------ hosts

    @property
    def master0(self) -> Host:
        """The first master: the cluster is initialized there."""
        return self.cf.cluster.master0()

    @property
    def lead(self) -> Host:
        """The master cluster-level phases run on: master0, or once the cluster
        is initialized, the first master in order that answers (a cluster with
        several masters keeps working when master0 is down)."""
        if self._lead is None:
            self._lead = self._first_live_master()
        return self._lead

    def _first_live_master(self) -> Host:
        masters = self.cf.cluster.masters()
        if titles.INIT_CLUSTER not in self.state.cluster_steps or len(masters) == 1:
            return masters[0]
        errors: list[str] = []
        for m in masters:
            try:
                self.conn(m)
            except KbuildError as exc:
                errors.append(f"{m.ip}: {exc.message.splitlines()[0]}")
                continue
            if errors:
                emit(self.progress, Message(f"using master {m.ip}: " + "; ".join(errors)))
            return m
        raise ClusterError(
            f"no master of cluster {self.cf.cluster.name} answers: " + "; ".join(errors)
        )

    def conn(self, host: Host) -> Executor:
        """The host's connection (made on first use)."""
        with self._lock:
            first = host.ip not in self._connected
            self._connected.add(host.ip)
        if first:
            emit(self.progress, HostStatus(host.ip, "connecting"))
        return self.pool.get(host.ip, credentials(host), name=host.ip)

    def mounted(self, host: Host) -> bool:
        """True when the cluster's rootfs is mounted on the host (asked once)."""
        if host.ip not in self._mounted:
            self._mounted[host.ip] = is_mounted(self.conn(host), self.paths)
        return self._mounted[host.ip]

    def view(self) -> ClusterView:
        """The cluster as every phase's environment describes it."""
        c = self.cf.cluster
        hosts = c.all_hosts()
        return ClusterView(
            name=c.name,
            image=c.image,
            data_root=c.data_root,
            masters=tuple(h.ip for h in hosts if h.is_master),
            nodes=tuple(h.ip for h in hosts if not h.is_master),
        )

    def env(self, host: Host, phase: str) -> dict[str, str]:
        """A script's or plugin's environment on ``host`` at ``phase``."""
        image_env = self.image.env if self.image is not None else {}
        return host_env(image_env, host, self.view(), phase)

    # ------------------------------------------------------------ state

    def record(self, host: Host) -> HostRecord:
        """The host's record in the cluster state (made on first use)."""
        rec = self.state.hosts.get(host.ip)
        if rec is None:
            rec = self.state.hosts[host.ip] = HostRecord(roles=list(host.roles))
        return rec

    def save(self) -> None:
        """Write the cluster state."""
        with self._lock:
            self.sd.save_state(self.state)

    # ------------------------------------------------------------ image

    def load_image(self, arch: str | None) -> ImageInfo:
        """The image for hosts of ``arch``, its layer scans, plugins and driver.

        Another image than the one the cluster runs is an update: the driver
        says whether it may be one (Kubernetes: the same version; an upgrade
        has a command of its own), and the image gets a generation of its own
        (:attr:`generation`).
        """
        image = inspect_image(self.opts.store, self.cf.cluster.image, arch=arch)
        self._use_image(image)
        if self.state.manifest and self.state.manifest != image.manifest_digest:
            self.driver.check_update(self, image)
        first = self.state.images[0] if self.state.images else image.manifest_digest
        self.generation = "" if first == image.manifest_digest else image.manifest_digest[7:19]
        return image

    def load_platforms(self, arches: Sequence[str]) -> None:
        """The image (and layer scans) of every other architecture among the
        hosts, from the index :meth:`load_image` took the lead's from."""
        assert self.image is not None
        self.platforms = {}
        for arch in sorted(set(arches)):
            if arch == self.image.arch:
                continue
            image = inspect_image(self.opts.store, self.cf.cluster.image, arch=arch)
            if image.manifest_digest != self.image.manifest_digest:  # else single-platform
                self.platforms[arch] = (image, scan_image(self.opts.store, image))

    def _platform(self, host: Host) -> tuple[ImageInfo, list[LayerScan]]:
        assert self.image is not None
        facts = self.facts.get(host.ip)
        mine = self.platforms.get(facts.arch) if facts is not None else None
        return mine or (self.image, self.scans)

    def image_for(self, host: Host) -> ImageInfo:
        """The image of ``host``'s platform (its layers, its manifest)."""
        return self._platform(host)[0]

    def scans_for(self, host: Host) -> list[LayerScan]:
        """The layer scans of ``host``'s platform (its templates)."""
        return self._platform(host)[1]

    def try_load_image(self) -> None:
        """The image the cluster runs (the manifest recorded in its state) when it
        is still in the local store (delete works without it; the driver then
        comes from the cluster's state)."""
        ref = self.state.manifest or self.cf.cluster.image
        try:
            self._use_image(inspect_image(self.opts.store, ref, arch=None))
        except KbuildError as exc:
            emit(
                self.progress,
                Message(
                    f"image {self.cf.cluster.image} not readable ({exc}); cleaning without its env"
                ),
            )
            self.image = None
            self.driver = driver_by_kind(self.state.driver, self.opts.drivers)

    def _use_image(self, image: ImageInfo) -> None:
        self.image = image
        self._earlier = None
        self.scans = scan_image(self.opts.store, image)
        self.image_plugins = [
            plugin
            for path, text in sorted(final_plugins(self.scans).items())
            for plugin in cfmod.load_plugins(text, source=f"{self.cf.cluster.image}:{path}")
        ]
        self.driver = select_driver(image.labels, self.opts.drivers)

    def earlier_images(self) -> list[ImageInfo]:
        """The images the cluster ran before this one, oldest first, that the
        local store still holds (one it lost is named once)."""
        if self._earlier is None:
            assert self.image is not None
            self._earlier = []
            for digest in self.state.images:
                if digest == self.image.manifest_digest:
                    continue
                try:
                    self._earlier.append(inspect_image(self.opts.store, digest,
                                                       arch=self.image.arch))
                except KbuildError as exc:
                    emit(self.progress, Message(
                        f"image {digest[:19]} the cluster ran before is not in the local "
                        f"store ({exc}): the container images only it carried are not served"))
        return self._earlier

    def rootfs_layers(self, host: Host | None = None) -> list[Layer]:
        """The layers the rootfs (of ``host``) is mounted with, bottom first: the
        container images earlier images of the cluster carried (their
        ``registry/``-only layers this image lacks; pods of earlier apps still
        run them), then this image's layers. The earlier images are the lead's
        platform's: a host of another platform has its own image's layers."""
        assert self.image is not None
        if host is not None and self.image_for(host) is not self.image:
            return list(self.image_for(host).layers)
        seen = {layer.hex for layer in self.image.layers}
        kept: list[Layer] = []
        for image in self.earlier_images():
            for layer in image.layers:
                if layer.hex not in seen and scan_layer(self.opts.store, layer).registry_only:
                    kept.append(layer)
                    seen.add(layer.hex)
        return kept + self.image.layers

    def served_images(self) -> list[CarriedImage]:
        """The container images the hosts' registries serve: this image's, then
        those of the earlier images whose layers stay mounted (newest first)."""
        assert self.image is not None
        kept = {layer.hex for layer in self.rootfs_layers()}
        out = list(self.image.images)
        for image in reversed(self.earlier_images()):
            if any(layer.hex in kept for layer in image.layers
                   if scan_layer(self.opts.store, layer).registry_only):
                out += image.images
        return out

    def plugins_for(self, action: str) -> list[PluginDoc]:
        """The image's plugins (``plugins/*.yaml``), then the Clusterfile's; a
        Clusterfile plugin replaces an image plugin of the same name."""
        mine = {p.name for p in self.cf.plugins}
        merged = [p for p in self.image_plugins if p.name not in mine] + self.cf.plugins
        return [p for p in merged if p.action == action]
