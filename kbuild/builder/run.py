"""RUN: a host command over an overlay of the image's layers, in its own mount namespace.

As in sealer, the command runs on the build machine with host tools and the
host network, in the image's root filesystem as working directory. The
rootfs is an overlay whose lower dirs are the parent layers' snapshots and
whose upper dir is fresh; the overlay is mounted inside a private mount
namespace (``unshare --mount``), so it disappears with the process whatever
happens. What the command changed is the upper dir, packed by the caller with
``overlay_upper=True`` (deletions become whiteouts).

The image is untrusted: a symlink of a base layer (``etc -> /etc``) would
lead the command's writes out of the rootfs. So in that namespace
(``_confine.py``) every mount is made read-only and ``nodev``, except the
rootfs, a private ``/tmp`` and ``/var/tmp`` and a minimal ``/dev``: the build
machine can be read (host tools), not written.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from kbuild.errors import BuildError

TAIL_LINES = 20
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CONFINE = Path(__file__).with_name("_confine.py")
_SETUP_FAILED = 125


def needs_root(where: str) -> None:
    """Raise unless running as root (overlay mounts need it)."""
    if os.geteuid() != 0:
        raise BuildError(
            f"{where}: RUN needs root (it mounts an overlay of the image layers)",
            hint="run `kbuild build` as root (e.g. with sudo), or drop the RUN instruction",
        )


def shell_words(command: str | None, argv: Sequence[str] | None, shell: Sequence[str],
                heredocs: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The argv a RUN executes (shell form through ``shell``, exec form as is)."""
    if argv is not None:
        return list(argv)
    text = command or ""
    if heredocs:
        stripped = text.strip()
        first = heredocs[0][0]
        if stripped in (f"<<{first}", f"<<-{first}", f"<<'{first}'", f'<<"{first}"'):
            return [*shell, heredocs[0][1]]
        for name, body in heredocs:
            text += "\n" + body + ("" if body.endswith("\n") else "\n") + name
    return [*shell, text]


class RunInOverlay:
    """One RUN execution: temp dirs, the namespaced overlay, the captured output."""

    def __init__(self, tmp_root: Path, lowers: list[Path]) -> None:
        tmp_root.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp_root))
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.merged = self.dir / "merged"
        self.private = self.dir / "private"
        empty = self.dir / "empty"
        for d in (self.upper, self.work, self.merged, self.private, empty):
            d.mkdir()
        self.lowers = [str(p) for p in lowers] or [str(empty)]

    def run(self, argv: list[str], env: Mapping[str, str], *, where: str,
            display: str, workdir: str = "", on_line: Callable[[str], None] | None = None) -> None:
        """Run ``argv`` in the merged rootfs; raise ``BuildError`` with the tail on failure."""
        for lower in self.lowers:
            if "," in lower or ":" in lower:
                raise BuildError(f"{where}: layer path {lower!r} cannot be an overlay lower dir")
        options = (
            f"lowerdir={':'.join(self.lowers)},upperdir={self.upper},workdir={self.work}"
        )
        cmd = [
            "unshare", "--mount", "--propagation", "private",
            sys.executable, "-I", str(_CONFINE), options, str(self.merged), workdir,
            str(self.private), "--", *argv,
        ]
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=dict(env), cwd=self.dir,
            )
        except FileNotFoundError as exc:
            raise BuildError(f"{where}: cannot start RUN: {exc}",
                             hint="RUN needs util-linux `unshare` and overlayfs") from exc
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)
        code = proc.wait()
        if code != 0:
            text = f"{where}: RUN failed: {display}\n  exit code: {code}"
            if code == _SETUP_FAILED and any(t.startswith("kbuild-run:") for t in tail):
                text += "\n  (the RUN environment could not be set up; see the last output)"
            if tail:
                text += "\n  last output:\n" + "\n".join("    " + t for t in tail)
            raise BuildError(text)

    def cleanup(self) -> None:
        """Remove every temp dir (the mount died with its namespace)."""
        shutil.rmtree(self.dir, ignore_errors=True)


def run_env(image_env: Mapping[str, str], args: Mapping[str, str], rootfs: Path) -> dict[str, str]:
    """Environment of a RUN: host PATH, build args, then image ENV (ENV wins)."""
    env = {
        "PATH": os.environ.get("PATH", _DEFAULT_PATH),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
    }
    env.update(args)
    env.update(image_env)
    env["ROOTFS"] = str(rootfs)
    return env
