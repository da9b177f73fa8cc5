"""The cluster life cycle: run, join, delete, apply, exec.

All of ``run``, ``join`` and ``apply`` converge on one flow
(:meth:`_Session.converge`): read-only preflight of the hosts to work on,
then per host (in parallel) data root, layers, mount and rendered files, then
the phases of the runtime contract, each recorded in the local state when it
finished, so a re-run skips what is done and continues what failed.

    pre-install (master0, once)       plugins
    pre-init-host (hosts)             plugins
    init-host (hosts)                 scripts/init-host.sh
    init-cluster (master0, once)      scripts/init-cluster.sh
    join-cluster (master0)            scripts/join-cluster.sh, when hosts join
    join-host (hosts but master0)     scripts/join-host.sh
    launch (master0, once)            CMDS / LAUNCH apps / CMD
    post-init-host (hosts)            plugins
    post-install (master0, once)      plugins
    pre-scaleup / post-scaleup        plugins around a join to a finished cluster
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from kbuild.errors import ClusterError, HostError, HostsError, KbuildError
from kbuild.layerstore import Store
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime import kubernetes as kube
from kbuild.runtime import render
from kbuild.runtime.clusterfile import Clusterfile, Host, PluginDoc
from kbuild.runtime.distribute import HostLayers, host_layers, remote_script, send_missing
from kbuild.runtime.executor import Credentials, Executor, Result
from kbuild.runtime.image import ImageInfo, Layer, inspect_image
from kbuild.runtime.layers import LayerScan, final_plugins, final_templates, scan_image
from kbuild.runtime.mount import ClusterPaths, is_mounted, mount_rootfs, unmount_rootfs
from kbuild.runtime.phases import (
    ClusterView,
    exports,
    host_env,
    run_command,
    run_plugin,
    run_script,
)
from kbuild.runtime.preflight import HostFacts, gather_facts, problems, raise_problems
from kbuild.runtime.runevents import HostOutput, HostStatus, Message, PhaseStarted, Progress, emit
from kbuild.runtime.ssh import ConnectionPool, run_on_hosts
from kbuild.runtime.state import HostRecord, StateDir, state_root

T = TypeVar("T")

HOST_STEPS = ("pre-init-host", "init-host", "join-host", "post-init-host")
CLUSTER_STEPS = ("pre-install", "init-cluster", "launch", "post-install")


@dataclass
class Options:
    """How the life-cycle functions reach hosts and report."""

    store: Store
    progress: Progress | None = None
    accept_changed_host_key: bool = False
    connect_timeout: float = 10.0
    retries: int = 2
    state_root: Path | None = None
    max_workers: int = 16


@dataclass
class HostPlan:
    """One host in a plan."""

    ip: str
    roles: tuple[str, ...]
    arch: str
    missing: list[Layer]
    present: int

    @property
    def bytes_to_send(self) -> int:
        """Blob bytes this host will receive."""
        return sum(layer.size for layer in self.missing)


@dataclass
class Plan:
    """What a run will do (``--dry-run`` prints it)."""

    cluster: str
    image: str
    manifest: str
    hosts: list[HostPlan] = field(default_factory=list)
    phases: list[tuple[str, list[str]]] = field(default_factory=list)


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


def _view(cf: Clusterfile) -> ClusterView:
    c = cf.cluster
    hosts = c.all_hosts()
    return ClusterView(
        name=c.name,
        image=c.image,
        data_root=c.data_root,
        masters=tuple(h.ip for h in hosts if h.is_master),
        nodes=tuple(h.ip for h in hosts if not h.is_master),
    )


class _Session:
    """Connections, image and state of one life-cycle operation."""

    def __init__(self, cf: Clusterfile, opts: Options) -> None:
        self.cf = cf
        self.opts = opts
        self.progress = opts.progress
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
        self.scans: list[LayerScan] = []
        self.image_plugins: list[PluginDoc] = []
        self.facts: dict[str, HostFacts] = {}
        self._connected: set[str] = set()
        self.kube_pki: kube.ClusterPki | None = None

    def close(self) -> None:
        self.pool.close()

    # ------------------------------------------------------------ helpers

    def conn(self, host: Host) -> Executor:
        if host.ip not in self._connected:
            self._connected.add(host.ip)
            emit(self.progress, HostStatus(host.ip, "connecting"))
        return self.pool.get(host.ip, credentials(host), name=host.ip)

    def parallel(
        self, hosts: Sequence[Host], fn: Callable[[Host], T], *, check: bool = True
    ) -> dict[str, T]:
        res = run_on_hosts(
            list(hosts), fn, max_workers=self.opts.max_workers, name=lambda h: h.ip, check=False
        )
        if check:
            res.raise_for_errors()
        return res.results

    def record(self, host: Host) -> HostRecord:
        rec = self.state.hosts.get(host.ip)
        if rec is None:
            rec = self.state.hosts[host.ip] = HostRecord(roles=list(host.roles))
        return rec

    def save(self) -> None:
        self.sd.save_state(self.state)

    def env(self, host: Host, phase: str) -> dict[str, str]:
        assert self.image is not None
        return host_env(self.image.env, host, _view(self.cf), phase)

    # ------------------------------------------------------------ preflight

    def load_image(self, arch: str | None) -> ImageInfo:
        image = inspect_image(self.opts.store, self.cf.cluster.image, arch=arch)
        if self.state.manifest and self.state.manifest != image.manifest_digest:
            raise ClusterError(
                f"cluster {self.cf.cluster.name} runs {self.state.image} "
                f"({self.state.manifest[:19]}), "
                f"and {self.cf.cluster.image} is now {image.manifest_digest[:19]}",
                hint="changing the image of a running cluster (upgrade) is not supported; "
                "delete the cluster first or use the image it was created with",
            )
        self.image = image
        self.scans = scan_image(self.opts.store, image)
        self.image_plugins = self._read_image_plugins()
        return image

    def _read_image_plugins(self) -> list[PluginDoc]:
        out: list[PluginDoc] = []
        for path, text in sorted(final_plugins(self.scans).items()):
            out.extend(cfmod.load_plugins(text, source=f"{self.cf.cluster.image}:{path}"))
        return out

    def plugins_for(self, action: str) -> list[PluginDoc]:
        """The image's plugins (``plugins/*.yaml``), then the Clusterfile's; a
        Clusterfile plugin replaces an image plugin of the same name."""
        mine = {p.name for p in self.cf.plugins}
        merged = [p for p in self.image_plugins if p.name not in mine] + self.cf.plugins
        return [p for p in merged if p.action == action]

    def preflight(self, hosts: Sequence[Host]) -> Plan:
        """Read-only checks of ``hosts``; raises with every problem found."""
        data_root = self.cf.cluster.data_root
        self.opts.store.resolve(self.cf.cluster.image)  # a missing image fails before any host

        def facts_of(h: Host) -> HostFacts:
            emit(self.progress, HostStatus(h.ip, "preflight"))
            return gather_facts(self.conn(h), data_root)

        results = run_on_hosts(
            list(hosts),
            facts_of,
            max_workers=self.opts.max_workers,
            name=lambda h: h.ip,
            check=False,
        )
        self.facts.update(results.results)
        arches = sorted({f.arch for f in results.results.values()})
        if len(arches) > 1:
            raise ClusterError(
                "hosts have different architectures: "
                + ", ".join(f"{ip} {f.arch}" for ip, f in sorted(results.results.items()))
            )
        image = self.load_image(arches[0] if arches else None)
        sizes = {layer.hex: scan.size for layer, scan in zip(image.layers, self.scans, strict=True)}
        ok_hosts = [h for h in hosts if h.ip in results.results]
        layer_results = run_on_hosts(
            ok_hosts,
            lambda h: host_layers(self.conn(h), data_root, image),
            max_workers=self.opts.max_workers,
            name=lambda h: h.ip,
            check=False,
        )
        errors: dict[str, KbuildError] = {**results.errors, **layer_results.errors}
        found: dict[str, list[str]] = {}
        plan = Plan(self.cf.cluster.name, self.cf.cluster.image, image.manifest_digest)
        for h in hosts:
            facts = results.results.get(h.ip)
            hl: HostLayers | None = layer_results.results.get(h.ip)
            if facts is None or hl is None:
                continue
            need = sum(sizes[layer.hex] for layer in hl.missing)
            found[h.ip] = problems(
                facts, image_arch=image.arch, need_bytes=need, data_root=data_root
            )
            plan.hosts.append(HostPlan(h.ip, h.roles, facts.arch, hl.missing, len(hl.present)))
            emit(self.progress, HostStatus(h.ip, "checked", f"{len(hl.missing)} layers to send"))
        raise_problems(found, errors)
        return plan

    # ------------------------------------------------------------ provision

    def provision(self, host: Host) -> None:
        """Data root, layers, mount, rendered files on one host (idempotent)."""
        assert self.image is not None
        conn = self.conn(host)
        facts = self.facts.get(host.ip) or gather_facts(conn, self.cf.cluster.data_root)
        conn.run(remote_script("prepare-data-root.sh", self.cf.cluster.data_root))
        todo = host_layers(conn, self.cf.cluster.data_root, self.image)
        send_missing(
            conn,
            self.opts.store,
            self.cf.cluster.data_root,
            todo,
            host_tools=facts.tools,
            progress=self.progress,
        )
        if mount_rootfs(conn, self.paths, self.image.layers):
            emit(self.progress, HostStatus(host.ip, "mounted", self.paths.rootfs))
        files = render.render_files(final_templates(self.scans), self.env(host, "render"))
        files.update(render.config_files(conn, self.paths.rootfs, self.cf.configs))
        if self.kube_pki is not None:
            files.update(self.kube_files(conn, host))
        written = render.write_files(conn, self.paths.rootfs, files)
        if written:
            emit(self.progress, HostStatus(host.ip, "rendered", ", ".join(written)))
        self.host_aliases(conn)

    def kube_files(self, conn: Executor, host: Host) -> dict[str, bytes]:
        """Generated Kubernetes files for one host (kbuild.runtime.kubernetes)."""
        assert self.image is not None and self.kube_pki is not None
        rootfs = self.paths.rootfs
        image_yml = render.read_remote(conn, rootfs, "etc/kubeadm.yml")
        config = kube.kubeadm_config(self.cf, self.image, image_yml)
        files = kube.host_files(
            self.cf, host, self.image, self.kube_pki.ca.cert_pem, rootfs=rootfs,
            containerd_root=kube.containerd_root(conn, self.paths.base), config=config,
        )
        if host.ip == self.cf.cluster.master0().ip:
            kube.write_secret_files(
                conn, kube.master0_secret_files(self.paths.base, self.kube_pki.registry, rootfs)
            )
        return files

    def host_aliases(self, conn: Executor, *, remove: bool = False) -> None:
        """The Clusterfile's hostAliases in the host's /etc/hosts (marked, idempotent);
        for a Kubernetes image also the registry domain and the API server name."""
        lines = (
            ""
            if remove
            else "".join(
                f"{a['ip']} {' '.join(a['hostnames'])}\n" for a in self.cf.cluster.host_aliases
            )
        )
        if not remove and self.kube_pki is not None:
            lines += kube.host_alias_lines(self.cf.cluster)
        res = conn.run(remote_script("host-aliases.sh", self.cf.cluster.name), stdin=lines)
        if "changed" in res.stdout:
            emit(self.progress, HostStatus(conn.name, "hosts", "/etc/hosts aliases updated"))

    def save_copy_on_master0(self) -> None:
        """The Clusterfile, 0600, next to the rootfs on master0 (only when changed)."""
        m0 = self.cf.cluster.master0()
        conn = self.conn(m0)
        data = cfmod.dumps(self.cf).encode()
        path = shlex.quote(self.paths.base + "/Clusterfile")
        want = hashlib.sha256(data).hexdigest()
        have = conn.run(f"sha256sum {path} 2>/dev/null || true").stdout.split(" ")[0]
        if have != want:
            conn.run(
                f"umask 077; cat > {path}.tmp && chmod 600 {path}.tmp && mv -f {path}.tmp {path}",
                stdin=data,
            )

    # ------------------------------------------------------------ phases

    def host_step(self, step: str, hosts: Sequence[Host], fn: Callable[[Host], object]) -> None:
        todo = [h for h in hosts if not self.record(h).done(step)]
        if not todo:
            return
        emit(self.progress, PhaseStarted(step, tuple(h.ip for h in todo)))

        def wrapped(h: Host) -> None:
            emit(self.progress, HostStatus(h.ip, step))
            fn(h)

        res = run_on_hosts(
            todo, wrapped, max_workers=self.opts.max_workers, name=lambda h: h.ip, check=False
        )
        for ip in res.results:
            self.state.hosts[ip].steps.append(step)
        self.save()
        res.raise_for_errors()

    def cluster_step(self, step: str, fn: Callable[[], object]) -> None:
        if step in self.state.cluster_steps:
            return
        m0 = self.cf.cluster.master0()
        emit(self.progress, PhaseStarted(step, (m0.ip,)))
        emit(self.progress, HostStatus(m0.ip, step))
        fn()
        self.state.cluster_steps.append(step)
        self.save()

    def plugins(self, action: str, host: Host, cwd: str | None = None) -> None:
        conn = self.conn(host)
        for plugin in self.plugins_for(action):
            if plugin.applies_to(host.roles):
                run_plugin(
                    conn,
                    plugin,
                    cwd or self.paths.rootfs,
                    self.env(host, action),
                    progress=self.progress,
                )

    def script(self, phase: str, host: Host, extra: dict[str, str] | None = None) -> str:
        env = {**self.env(host, phase), **(extra or {})}
        _, out = run_script(self.conn(host), self.paths, phase, env, progress=self.progress)
        return out

    def launch(self) -> None:
        assert self.image is not None
        c = self.cf.cluster
        m0 = c.master0()
        conn = self.conn(m0)
        for cwd, command, app_env in self.image.launch_commands(c.app_names, c.cmds):
            env = {**self.env(m0, "launch"), **app_env}
            run_command(
                conn,
                f"{self.paths.rootfs}/{cwd}",
                command,
                env,
                what="launch command",
                progress=self.progress,
            )

    # ------------------------------------------------------------ converge

    def converge(self, *, dry_run: bool = False) -> Plan:
        """Bring every host of the Clusterfile to the finished state."""
        c = self.cf.cluster
        hosts = c.all_hosts()
        m0 = c.master0()
        if not dry_run and self.state.hosts.get(m0.ip) is None and self.state.cluster_steps:
            raise ClusterError(f"master0 {m0.ip} is not the host the cluster was created on")
        if self.state.hosts and self.state.data_root != c.data_root:
            raise ClusterError(
                f"cluster {c.name} keeps its data in {self.state.data_root}, "
                f"the Clusterfile says {c.data_root}",
                hint="dataRoot cannot change while the cluster exists",
            )
        pending = [h for h in hosts if not self._complete(h)]
        work = [m0] + [h for h in pending if h.ip != m0.ip]
        scaleup = "post-install" in self.state.cluster_steps and bool(pending)
        plan = self.preflight(work)
        plan.phases = self._phase_list(pending, scaleup)
        if dry_run:
            return plan
        assert self.image is not None
        self.state.image = c.image
        self.state.manifest = self.image.manifest_digest
        self.state.data_root = c.data_root
        self.state.status = "running"
        for h in hosts:
            self.record(h)
        self.sd.save_clusterfile(self.cf)
        self.save()
        if kube.kubernetes_version(self.image) is not None:
            self.kube_pki = kube.cluster_pki(self.sd.path, c)
        try:
            self._converge(m0, pending, scaleup, work)
        except BaseException:
            self.state.status = "failed"
            self.save()
            raise
        self.state.status = "done"
        self.save()
        return plan

    def _complete(self, h: Host) -> bool:
        rec = self.state.hosts.get(h.ip)
        if rec is None:
            return False
        need = [
            s for s in HOST_STEPS if not (s == "join-host" and h.ip == self.cf.cluster.master0().ip)
        ]
        return all(rec.done(s) for s in need)

    def _phase_list(self, pending: list[Host], scaleup: bool) -> list[tuple[str, list[str]]]:
        m0 = self.cf.cluster.master0().ip
        ips = [h.ip for h in pending]
        joiners = [ip for ip in ips if ip != m0]
        out: list[tuple[str, list[str]]] = []
        if scaleup:
            out.append(("pre-scaleup", [m0]))
        for step, where in (
            ("pre-install", [m0]),
            ("pre-init-host", ips),
            ("init-host", ips),
            ("init-cluster", [m0]),
            ("join-cluster", [m0] if joiners else []),
            ("join-host", joiners),
            ("launch", [m0]),
            ("post-init-host", ips),
            ("post-install", [m0]),
        ):
            if step in CLUSTER_STEPS and step in self.state.cluster_steps:
                continue
            if where:
                out.append((step, where))
        if scaleup:
            out.append(("post-scaleup", [m0]))
        return out

    def _converge(self, m0: Host, pending: list[Host], scaleup: bool, work: list[Host]) -> None:
        self.parallel(work, self.provision)
        self.save_copy_on_master0()
        if scaleup:
            self.plugins("pre-scaleup", m0)
        self.cluster_step("pre-install", lambda: self.plugins("pre-install", m0))
        self.host_step("pre-init-host", pending, lambda h: self.plugins("pre-init-host", h))
        self.host_step("init-host", pending, lambda h: self.script("init-host", h))
        self.cluster_step("init-cluster", lambda: self.script("init-cluster", m0))
        if self.kube_pki is not None:
            path = kube.fetch_kubeconfig(self.conn(m0), self.sd.path, m0.ip)
            emit(self.progress, HostStatus(m0.ip, "kubeconfig", str(path)))
        joiners = [h for h in pending if h.ip != m0.ip and not self.record(h).done("join-host")]
        if joiners:
            extra = {
                "KBUILD_JOIN_MASTERS": ",".join(h.ip for h in joiners if h.is_master),
                "KBUILD_JOIN_NODES": ",".join(h.ip for h in joiners if not h.is_master),
            }
            emit(self.progress, PhaseStarted("join-cluster", (m0.ip,)))
            exported = exports(self.script("join-cluster", m0, extra))

            def join(h: Host) -> None:
                self.script("join-host", h, {**extra, **exported})

            # masters one at a time (each extends etcd), then the nodes in parallel
            for master in [h for h in joiners if h.is_master]:
                self.host_step("join-host", [master], join)
            self.host_step("join-host", [h for h in joiners if not h.is_master], join)
        if self.kube_pki is not None:
            labelled = kube.apply_labels(self.conn(m0), pending)
            if labelled:
                emit(self.progress, HostStatus(m0.ip, "labels", ", ".join(labelled)))
            kube.store_clusterfile(self.conn(m0), self.cf)
        self.cluster_step("launch", self.launch)
        self.host_step("post-init-host", pending, lambda h: self.plugins("post-init-host", h))
        self.cluster_step("post-install", lambda: self.plugins("post-install", m0))
        if scaleup:
            self.plugins("post-scaleup", m0)
        for h in pending:
            emit(self.progress, HostStatus(h.ip, "done"))

    # ------------------------------------------------------------ delete

    def clean_host(self, host: Host) -> None:
        """Clean scripts and plugins, unmount, remove the cluster's data from one host."""
        conn = self.conn(host)
        emit(self.progress, HostStatus(host.ip, "cleaning"))
        mounted = is_mounted(conn, self.paths)
        env = self._clean_env(host, "clean-host")
        for plugin in self.plugins_for("pre-clean-host"):
            if plugin.applies_to(host.roles):
                run_plugin(
                    conn, plugin, self.paths.rootfs if mounted else "/", env, progress=self.progress
                )
        if mounted:
            run_script(conn, self.paths, "clean-host", env, progress=self.progress)
        unmount_rootfs(conn, self.paths)
        conn.run(
            remote_script("remove-cluster.sh", self.cf.cluster.data_root, self.cf.cluster.name)
        )
        self.host_aliases(conn, remove=True)
        for plugin in self.plugins_for("post-clean-host"):
            if plugin.applies_to(host.roles):
                run_plugin(conn, plugin, "/", env, progress=self.progress)
        emit(self.progress, HostStatus(host.ip, "removed"))

    def _clean_env(self, host: Host, phase: str) -> dict[str, str]:
        image_env: dict[str, str] = {}
        if self.image is not None:
            image_env = self.image.env
        return host_env(image_env, host, _view(self.cf), phase)

    def try_load_image(self) -> None:
        """The image when it is still in the local store (delete works without it)."""
        try:
            self.image = inspect_image(self.opts.store, self.cf.cluster.image, arch=None)
            self.scans = scan_image(self.opts.store, self.image)
            self.image_plugins = self._read_image_plugins()
        except KbuildError as exc:
            emit(
                self.progress,
                Message(
                    f"image {self.cf.cluster.image} not readable ({exc}); cleaning without its env"
                ),
            )
            self.image = None

    def master_script(self, phase: str, extra: dict[str, str]) -> None:
        m0 = self.cf.cluster.master0()
        conn = self.conn(m0)
        if is_mounted(conn, self.paths):
            env = {**self._clean_env(m0, phase), **extra}
            run_script(conn, self.paths, phase, env, progress=self.progress)


# ---------------------------------------------------------------- public API


def _reachable_filter(s: _Session, hosts: list[Host], force: bool) -> list[Host]:
    """With ``force``, hosts that cannot be reached are reported and skipped."""
    if not force:
        return hosts
    res = run_on_hosts(
        hosts, s.conn, max_workers=s.opts.max_workers, name=lambda h: h.ip, check=False
    )
    for ip, err in res.errors.items():
        emit(s.progress, Message(f"{ip}: skipped, cannot reach it: {err.message.splitlines()[0]}"))
    return [h for h in hosts if h.ip in res.results]


def run_cluster(
    cf: Clusterfile, opts: Options, *, dry_run: bool = False, provider: str = ""
) -> Plan:
    """``kbuild run``: bring the Clusterfile's hosts up (or continue a failed run).

    ``provider="podman"`` records that the hosts were made by the podman
    provider, so ``delete --all`` removes them.
    """
    sd = StateDir(cf.cluster.name, opts.state_root)
    if sd.exists():
        recorded = sd.load_clusterfile()
        have = set(cfmod.iter_host_ips(recorded))
        want = set(cfmod.iter_host_ips(cf))
        if have != want:
            raise ClusterError(
                f"cluster {cf.cluster.name} is recorded with hosts {', '.join(sorted(have))}",
                hint="use `kbuild apply -f Clusterfile` to change the hosts, or join/delete",
            )
    s = _Session(cf, opts)
    if provider and not dry_run:
        s.state.provider = provider
    try:
        return s.converge(dry_run=dry_run)
    finally:
        s.close()


def load_recorded(name: str, opts: Options) -> Clusterfile:
    """The Clusterfile recorded for cluster ``name``."""
    return StateDir(name, opts.state_root).load_clusterfile()


def join_hosts(
    name: str,
    opts: Options,
    *,
    masters: Sequence[str] = (),
    nodes: Sequence[str] = (),
    dry_run: bool = False,
) -> Plan:
    """``kbuild join``: add hosts to a recorded cluster and bring them up."""
    cf = load_recorded(name, opts)
    existing = set(cfmod.iter_host_ips(cf))
    new_m = [ip for ip in masters if ip not in existing]
    new_n = [ip for ip in nodes if ip not in existing]
    if new_m:
        cf = cfmod.add_hosts(cf, new_m, "master")
    if new_n:
        cf = cfmod.add_hosts(cf, new_n, "node")
    s = _Session(cf, opts)
    try:
        return s.converge(dry_run=dry_run)
    finally:
        s.close()


def delete_hosts(name: str, ips: Sequence[str], opts: Options, *, force: bool = False) -> None:
    """``kbuild delete --masters/--nodes``: clean hosts and remove them from the cluster."""
    cf = load_recorded(name, opts)
    known = set(cfmod.iter_host_ips(cf))
    unknown = [ip for ip in ips if ip not in known]
    if unknown:
        raise ClusterError(f"cluster {name} has no host {', '.join(unknown)}")
    m0 = cf.cluster.master0()
    if m0.ip in ips:
        raise ClusterError(
            f"{m0.ip} is master0 of cluster {name}",
            hint="master0 goes only with the whole cluster: `kbuild delete --all`",
        )
    s = _Session(cf, opts)
    try:
        s.try_load_image()
        targets = _reachable_filter(s, [cf.cluster.host(ip) for ip in ips], force)
        gone = [h.ip for h in targets]
        leaving = [cf.cluster.host(ip) for ip in ips]
        extra = {
            "KBUILD_LEAVE_MASTERS": ",".join(h.ip for h in leaving if h.is_master),
            "KBUILD_LEAVE_NODES": ",".join(h.ip for h in leaving if not h.is_master),
        }
        s.master_script("leave-cluster", extra)
        res = run_on_hosts(
            targets, s.clean_host, max_workers=opts.max_workers, name=lambda h: h.ip, check=False
        )
        done = [ip for ip in gone if ip in res.results] + (
            [ip for ip in ips if ip not in gone] if force else []
        )
        new_cf = cfmod.remove_hosts(cf, done) if done else cf
        s.sd.save_clusterfile(new_cf)
        for ip in done:
            s.state.hosts.pop(ip, None)
        s.save()
        s.cf = new_cf
        if done:
            s.save_copy_on_master0()
            if kube.kubernetes_version(s.image) is not None:
                kube.store_clusterfile(s.conn(m0), new_cf)
        res.raise_for_errors()
    finally:
        s.close()


def delete_cluster(
    cf: Clusterfile | None, opts: Options, *, name: str | None = None, force: bool = False
) -> None:
    """``kbuild delete --all``: leave every host as it was before ``run``."""
    if cf is None:
        if name is None:
            raise ClusterError("which cluster? give -f Clusterfile or --cluster-name")
        cf = load_recorded(name, opts)
    s = _Session(cf, opts)
    if s.state.provider == "podman":
        try:
            _delete_podman_hosts(s)
        finally:
            s.close()
        return
    try:
        s.try_load_image()
        hosts = _reachable_filter(s, cf.cluster.all_hosts(), force)
        m0 = cf.cluster.master0()
        errors: dict[str, KbuildError] = {}
        if any(h.ip == m0.ip for h in hosts):
            try:
                conn = s.conn(m0)
                mounted = is_mounted(conn, s.paths)
                env = s._clean_env(m0, "pre-uninstall")
                for plugin in s.plugins_for("pre-uninstall"):
                    run_plugin(
                        conn, plugin, s.paths.rootfs if mounted else "/", env, progress=s.progress
                    )
                s.master_script("clean-cluster", {})
            except HostError as exc:
                errors[m0.ip] = exc
        if not errors:
            res = run_on_hosts(
                hosts, s.clean_host, max_workers=opts.max_workers, name=lambda h: h.ip, check=False
            )
            errors.update(res.errors)
            cleaned = set(res.results)
            if m0.ip in cleaned:
                conn = s.conn(m0)
                for plugin in s.plugins_for("post-uninstall"):
                    run_plugin(
                        conn, plugin, "/", s._clean_env(m0, "post-uninstall"), progress=s.progress
                    )
            if not errors:
                kube.forget(s.sd.path)
                s.sd.remove()
            else:
                for ip in cleaned:
                    s.state.hosts.pop(ip, None)
                if s.sd.exists():
                    s.save()
        if len(errors) == 1:
            raise next(iter(errors.values()))
        if errors:
            raise HostsError(errors)
    finally:
        s.close()


def apply_clusterfile(
    cf: Clusterfile, opts: Options, *, dry_run: bool = False, force: bool = False
) -> Plan:
    """``kbuild apply -f``: make the recorded cluster match the Clusterfile."""
    sd = StateDir(cf.cluster.name, opts.state_root)
    if not sd.exists():
        return run_cluster(cf, opts, dry_run=dry_run)
    recorded = sd.load_clusterfile()
    if recorded.cluster.master0().ip != cf.cluster.master0().ip:
        raise ClusterError(
            f"master0 would change from {recorded.cluster.master0().ip} "
            f"to {cf.cluster.master0().ip}",
            hint="keep the first master first in the Clusterfile",
        )
    want = set(cfmod.iter_host_ips(cf))
    removed = [ip for ip in cfmod.iter_host_ips(recorded) if ip not in want]
    if removed and not dry_run:
        delete_hosts(cf.cluster.name, removed, opts, force=force)
    elif removed and opts.progress:
        emit(opts.progress, Message("would delete: " + ", ".join(removed)))
    s = _Session(cf, opts)
    try:
        return s.converge(dry_run=dry_run)
    finally:
        s.close()


def exec_on_hosts(
    name: str,
    command: str,
    opts: Options,
    *,
    roles: Sequence[str] = (),
    cf: Clusterfile | None = None,
) -> dict[str, Result]:
    """``kbuild exec``: run ``command`` on the cluster's hosts (optionally by role)."""
    cf = cf or load_recorded(name, opts)
    hosts = [h for h in cf.cluster.all_hosts() if not roles or set(roles) & set(h.roles)]
    if not hosts:
        raise ClusterError(
            f"no host of cluster {cf.cluster.name} has the role(s) {', '.join(roles)}"
        )
    s = _Session(cf, opts)
    try:

        def one(h: Host) -> Result:
            conn = s.conn(h)
            return conn.run(
                command,
                check=False,
                on_output=lambda host, stream, line: emit(
                    s.progress, HostOutput(host, stream, line)
                ),
            )

        res = run_on_hosts(
            hosts, one, max_workers=opts.max_workers, name=lambda h: h.ip, check=True
        )
        return res.results
    finally:
        s.close()


# ---------------------------------------------------------------- podman provider

PODMAN_DATA_ROOTS = (cfmod.DEFAULT_DATA_ROOT, "/tmp/kbuild/data")
"""dataRoot candidates for podman hosts: the default, on the host's own data
volume (``/var/lib/kbuild``, see :mod:`kbuild.runtime.podman`; it survives a
restart of the host), else (a host without that volume, whose ``/var/lib`` is
the container's overlayfs) the hosts' tmpfs, lost on restart."""


def podman_clusterfile(
    image: str,
    opts: Options,
    *,
    name: str,
    masters: int,
    nodes: int,
    env: Sequence[str] = (),
    cmds: Sequence[str] = (),
    apps: Sequence[str] = (),
    data_root: str | None = None,
) -> Clusterfile:
    """Start local podman hosts for a new cluster and return its Clusterfile.

    An existing record of the cluster is returned as it is (a re-run does not
    make new hosts).
    """
    import secrets

    from kbuild.runtime import podman

    sd = StateDir(name, opts.state_root)
    if sd.exists():
        return sd.load_clusterfile()
    if masters < 1:
        raise ClusterError("the podman provider needs at least one master")
    names = [f"master{i}" for i in range(masters)] + [f"node{i}" for i in range(nodes)]
    roles = ["master"] * masters + ["node"] * nodes
    password = secrets.token_urlsafe(18)

    def on_event(ev: podman.ProviderEvent) -> None:
        emit(opts.progress, Message(f"podman: {ev.what} {ev.name} {ev.detail}".rstrip()))

    # a Kubernetes image gets a network with no route out: nothing may be pulled
    # from outside, and a ClusterIP must never leak to a default gateway
    internal = kube.kubernetes_version(inspect_image(opts.store, image, arch=None)) is not None
    hosts = podman.create_hosts(
        name, names, roles=roles, root_password=password, progress=on_event, internal=internal
    )
    chosen = data_root
    if chosen is None:
        creds = hosts[0].credentials
        pool = ConnectionPool(known_hosts=(opts.state_root or state_root()) / "known_hosts")
        try:
            conn = pool.get(hosts[0].ip, creds, name=hosts[0].ip)
            chosen = PODMAN_DATA_ROOTS[-1]
            for candidate in PODMAN_DATA_ROOTS:
                if gather_facts(conn, candidate).fstype not in ("overlayfs", "aufs"):
                    chosen = candidate
                    break
        finally:
            pool.close()
    return cfmod.from_flags(
        image,
        masters=[h.ip for h in hosts if h.role == "master"],
        nodes=[h.ip for h in hosts if h.role == "node"],
        passwd=password,
        env=env,
        cmds=cmds,
        apps=apps,
        cluster_name=name,
        data_root=chosen,
    )


def _delete_podman_hosts(s: _Session) -> None:
    """``delete --all`` of a cluster on podman hosts: the hosts go entirely."""
    from kbuild.runtime import podman
    from kbuild.runtime.hostkeys import KnownHosts

    removed = podman.delete_cluster(s.cf.cluster.name)
    emit(s.progress, Message(f"podman: removed {', '.join(removed) or 'nothing'}"))
    known = KnownHosts((s.opts.state_root or state_root()) / "known_hosts")
    for h in s.cf.cluster.all_hosts():
        known.forget(h.ip, h.ssh.port or 22)
    kube.forget(s.sd.path)
    s.sd.remove()
