"""The cluster rootfs on a host: an overlay of the image's layers as a systemd mount unit.

``<dataRoot>/<cluster>/rootfs`` is an overlay whose lower dirs are the
layers in the host's layer store (reached through short symlinks
``<dataRoot>/<cluster>/lower/<n>`` so the option string stays short) and whose
upper dir ``<dataRoot>/<cluster>/upper`` takes the files rendered at run time.
A ``.mount`` unit named by systemd's path escaping makes the mount survive a
reboot; delete stops, disables and removes it. ``<dataRoot>/<cluster>/lower.ids``
records which layer dirs (device:inode) the rootfs was mounted on: a layer
sent again (its marker was not trusted after a power cut) is a new dir, and
the rootfs is mounted again over it.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from kbuild.errors import HostError
from kbuild.runtime.distribute import layer_store
from kbuild.runtime.executor import Executor
from kbuild.runtime.image import Layer

UNIT_DIR = "/etc/systemd/system"
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.")


def escape_path(path: str) -> str:
    """``systemd-escape --path PATH``: the unit name stem for a mount point."""
    norm = posixpath.normpath("/" + path).strip("/")
    if not norm:
        return "-"
    out: list[str] = []
    for i, ch in enumerate(norm):
        if ch == "/":
            out.append("-")
        elif ch in _SAFE and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


@dataclass(frozen=True)
class ClusterPaths:
    """Where one cluster lives on a host."""

    data_root: str
    cluster: str

    @property
    def base(self) -> str:
        """``<dataRoot>/<cluster>``."""
        return f"{self.data_root}/{self.cluster}"

    @property
    def rootfs(self) -> str:
        """The overlay mount point."""
        return f"{self.base}/rootfs"

    @property
    def upper(self) -> str:
        """The overlay upper dir (rendered files) of the cluster's first image."""
        return self.upper_of("")

    @property
    def work(self) -> str:
        """The overlay work dir of the cluster's first image."""
        return self.work_of("")

    def upper_of(self, tag: str) -> str:
        """The upper dir of an image generation (``tag``: "" for the first image,
        else 12 hex digits of the image's manifest digest)."""
        return f"{self.base}/upper" + (f"-{tag}" if tag else "")

    def work_of(self, tag: str) -> str:
        """The work dir that goes with :meth:`upper_of`."""
        return f"{self.base}/work" + (f"-{tag}" if tag else "")

    @property
    def lower(self) -> str:
        """The dir of short symlinks to the layers."""
        return f"{self.base}/lower"

    @property
    def lower_ids(self) -> str:
        """The file recording the layer dirs (device:inode) the rootfs is mounted on."""
        return f"{self.base}/lower.ids"

    @property
    def unit_name(self) -> str:
        """The mount unit's name."""
        return escape_path(self.rootfs) + ".mount"

    @property
    def unit_path(self) -> str:
        """The mount unit's file."""
        return f"{UNIT_DIR}/{self.unit_name}"


def mounts_escape(path: str) -> str:
    """``path`` as ``/proc/self/mounts`` writes it (space, tab, newline and
    backslash as octal escapes)."""
    table = {"\\": "\\134", " ": "\\040", "\t": "\\011", "\n": "\\012"}
    return "".join(table.get(c, c) for c in path)


def in_mounts(path: str, fstype: str = "") -> str:
    """A shell test: is something (of ``fstype``) mounted on ``path``? Compares
    literally with the mount point as ``/proc/self/mounts`` writes it
    (``scripts/remove-cluster.sh`` does the same with :func:`mounts_escape`'s
    output as its argument)."""
    entry = f" {mounts_escape(path)} " + (f"{fstype} " if fstype else "")
    return f"grep -qF -e {shlex.quote(entry)} /proc/self/mounts"


def unit_text(paths: ClusterPaths, layers: Sequence[Layer], tag: str = "") -> str:
    """The mount unit for ``layers`` (bottom first, as in the manifest) over the
    upper dir of generation ``tag``."""
    lowers = ":".join(f"{paths.lower}/{i}" for i in reversed(range(len(layers))))
    return (
        "# Written by kbuild: the root filesystem of cluster "
        f"{paths.cluster}; removed by `kbuild delete`.\n"
        "[Unit]\n"
        f"Description=kbuild cluster {paths.cluster} rootfs\n"
        "After=local-fs-pre.target\n"
        "Before=local-fs.target\n"
        f"RequiresMountsFor={paths.data_root}\n\n"
        "[Mount]\n"
        "What=overlay\n"
        f"Where={paths.rootfs}\n"
        "Type=overlay\n"
        f"Options=lowerdir={lowers},upperdir={paths.upper_of(tag)},workdir={paths.work_of(tag)}\n\n"
        "[Install]\n"
        "WantedBy=local-fs.target\n"
    )


def mount_rootfs(
    conn: Executor, paths: ClusterPaths, layers: Sequence[Layer], tag: str = ""
) -> bool:
    """Make the rootfs mounted with exactly these layers over the upper dir of
    generation ``tag``; True when something changed.

    Idempotent: when the unit file is unchanged, the mount is active and its
    layer dirs are those it was mounted on, nothing is touched (a layer sent
    again is a new dir: the rootfs is mounted again). A new generation
    (another image on a running host) starts as a copy of the current upper
    dir (files kbuild and the scripts wrote), and the old mount is detached
    lazily: processes started from it (containerd's shims, the kubelet) keep
    running from it until they are restarted, new processes see the new image.
    """
    text = unit_text(paths, layers, tag)
    q = shlex.quote
    links = " ".join(
        q(f"{i}:{layer_store(paths.data_root)}/{layer.hex}/fs") for i, layer in enumerate(layers)
    )
    upper, work = paths.upper_of(tag), paths.work_of(tag)
    mounted = in_mounts(paths.rootfs, "overlay")
    script = f"""
set -eu
unit={q(paths.unit_path)} name={q(paths.unit_name)} rootfs={q(paths.rootfs)}
upper={q(upper)} ids_file={q(paths.lower_ids)}
ids=$(for pair in {links}; do stat -L -c %d:%i "${{pair#*:}}" 2>/dev/null || echo -; done)
if [ -f "$unit" ] && cmp -s "$unit" - && systemctl is-active --quiet "$name" \
   && {mounted} && [ "$ids" = "$(cat "$ids_file" 2>/dev/null)" ]; then
    echo unchanged; exit 0
fi
prev=""
[ -f "$unit" ] && prev=$(sed -n 's/^Options=.*upperdir=\\([^,]*\\),.*/\\1/p' "$unit")
mkdir -p "$upper" {q(work)} {q(paths.rootfs)} {q(paths.lower)}
chmod 700 {q(paths.base)}
if [ -n "$prev" ] && [ "$prev" != "$upper" ] && [ -d "$prev" ] && [ ! -e "$upper.copied" ]; then
    cp -a "$prev/." "$upper/"
    touch "$upper.copied"
fi
if {mounted}; then
    umount "$rootfs" 2>/dev/null || umount -l "$rootfs"
fi
systemctl reset-failed "$name" 2>/dev/null || true
rm -f {q(paths.lower)}/*
for pair in {links}; do
    n=${{pair%%:*}}; target=${{pair#*:}}
    [ -d "$target" ] || {{ echo "layer dir $target is missing" >&2; exit 3; }}
    ln -s "$target" {q(paths.lower)}/"$n"
done
tmp=$(mktemp "$unit.XXXXXX")
printf '%s' {q(text)} >"$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$unit"
systemctl daemon-reload
systemctl enable "$name" >/dev/null 2>&1
if ! systemctl restart "$name"; then
    systemctl status --no-pager "$name" 2>&1 | tail -n 5 >&2 || true
    dmesg 2>/dev/null | grep -i overlay | tail -n 3 >&2 || true
    exit 4
fi
printf '%s\n' "$ids" >"$ids_file"
echo mounted
"""
    out = conn.run(script, stdin=text).stdout
    return "mounted" in out


def unmount_rootfs(conn: Executor, paths: ClusterPaths) -> None:
    """Stop, disable and remove the mount unit (fine when it is absent)."""
    q = shlex.quote
    script = f"""
unit={q(paths.unit_path)} name={q(paths.unit_name)} rootfs={q(paths.rootfs)}
if [ -f "$unit" ] || systemctl is-active --quiet "$name" 2>/dev/null; then
    systemctl disable "$name" >/dev/null 2>&1 || true
    systemctl stop "$name" 2>/dev/null || true
fi
if {in_mounts(paths.rootfs)}; then
    umount "$rootfs" 2>/dev/null || umount -l "$rootfs"
fi
rm -f "$unit"
systemctl daemon-reload
systemctl reset-failed "$name" 2>/dev/null || true
exit 0
"""
    conn.run(script)


def is_mounted(conn: Executor, paths: ClusterPaths) -> bool:
    """True when the rootfs overlay is mounted on the host."""
    res = conn.run(in_mounts(paths.rootfs, "overlay"), check=False)
    if res.exit_status not in (0, 1):
        raise HostError(conn.name, "cannot read /proc/self/mounts", output_tail=res.stderr)
    return res.exit_status == 0
