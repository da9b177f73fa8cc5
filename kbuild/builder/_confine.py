"""Set up a RUN's private mount namespace, then exec the command (run as a script).

``unshare --mount --propagation private python3 -I _confine.py OPTIONS MERGED WORKDIR
PRIVATE -- ARGV...`` runs this file as root inside a fresh mount namespace. It

1. mounts the overlay of the image layers on MERGED;
2. mounts a fresh ``/dev`` (tmpfs with null, zero, full, random, urandom, tty,
   the fd links and ``shm``) and binds fresh directories under PRIVATE over
   ``/tmp`` and ``/var/tmp`` (if MERGED lay under one of them, the overlay is
   bound again at the same path inside, so ``$ROOTFS`` stays valid);
3. makes every mount of the namespace read-only and ``nodev``
   (``mount_setattr`` with ``AT_RECURSIVE``), then writable again for MERGED
   and the private dirs, and device-capable for the fresh ``/dev`` only;
4. enters MERGED/WORKDIR and executes ARGV.

So a path of the image that leads out of the rootfs (``etc -> /etc``) ends on
a read-only file system instead of the build machine's files, and a device
node (in the image, or one of the machine's reached through a symlink) cannot
be opened. Any failure
before the exec exits with status 125 and a ``kbuild-run:`` line on stderr;
nothing runs half-confined. Standard library only: this file is executed by
path with ``python3 -I``, outside the kbuild package.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys

SYS_MOUNT_SETATTR = 442  # the same number on every architecture kbuild builds on
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NODEV = 0x4
MS_NOSUID = 0x2
MS_BIND = 0x1000
PRIVATE_DIRS = (("/tmp", "tmp"), ("/var/tmp", "var-tmp"))
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
SETUP_FAILED = 125

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    """mount(2)."""
    _check(_libc.mount(source.encode(), target.encode(),
                       fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                       data.encode() if data else None), f"mount {target}")


def set_attributes(path: str, *, add: int = 0, remove: int = 0,
                   recursive: bool = False) -> None:
    """mount_setattr(2): set ``add`` and clear ``remove`` (``MOUNT_ATTR_*``) on a mount."""
    attr = _MountAttr(add, remove, 0, 0)
    result = _libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD),
                           path.encode(), ctypes.c_uint(AT_RECURSIVE if recursive else 0),
                           ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(result, f"mount_setattr {path}")


def _same(path: str, fd: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _fresh_dev() -> None:
    mount("kbuild-dev", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        path = f"/dev/{name}"
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(path, 0o666)
    for name, target in DEV_LINKS:
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/shm")
    os.chmod("/dev/shm", 0o1777)


def confine(options: str, merged: str, private: str) -> None:
    """Steps 1-3."""
    mount("kbuild-run", merged, "overlay", 0, options)
    merged_fd = os.open(merged, os.O_PATH | os.O_DIRECTORY)
    binds: list[tuple[str, int]] = []
    for host_dir, name in PRIVATE_DIRS:
        if os.path.isdir(host_dir) and not os.path.islink(host_dir):
            own = os.path.join(private, name)
            os.mkdir(own, 0o700)
            os.chmod(own, 0o1777)
            binds.append((host_dir, os.open(own, os.O_PATH | os.O_DIRECTORY)))
    _fresh_dev()
    for host_dir, fd in binds:
        mount(f"/proc/self/fd/{fd}", host_dir, None, MS_BIND)
    if not _same(merged, merged_fd):  # hidden by a private dir: attach it again
        os.makedirs(merged, exist_ok=True)
        mount(f"/proc/self/fd/{merged_fd}", merged, None, MS_BIND)
    set_attributes("/", add=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV, recursive=True)
    for path in [merged] + [host_dir for host_dir, _ in binds]:
        set_attributes(path, remove=MOUNT_ATTR_RDONLY)
    set_attributes("/dev", remove=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV)


def main(args: list[str]) -> int:
    """``OPTIONS MERGED WORKDIR PRIVATE -- ARGV...``."""
    options, merged, workdir, private, sep, *argv = args
    if sep != "--" or not argv:
        print("kbuild-run: bad arguments", file=sys.stderr)
        return SETUP_FAILED
    try:
        confine(options, merged, private)
    except OSError as exc:
        print(f"kbuild-run: cannot confine RUN: {exc.strerror or exc}", file=sys.stderr)
        return SETUP_FAILED
    cwd = os.path.join(merged, workdir.lstrip("/"))
    try:
        os.makedirs(cwd, exist_ok=True)
        os.chdir(cwd)
    except OSError as exc:
        print(f"kbuild-run: cannot enter the working directory {workdir or '/'}: "
              f"{exc.strerror}", file=sys.stderr)
        return SETUP_FAILED
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"kbuild-run: {argv[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
