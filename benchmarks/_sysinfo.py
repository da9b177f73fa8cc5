"""Facts about the machine a benchmark ran on, shared by the benchmark scripts."""

from __future__ import annotations

import os
from pathlib import Path


def _proc_field(path: str, key: str) -> str | None:
    for line in Path(path).read_text().splitlines():
        if line.startswith(key):
            return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    return _proc_field("/proc/cpuinfo", "model name") or "unknown"


def memory_gib() -> float:
    """Total memory in GiB."""
    text = _proc_field("/proc/meminfo", "MemTotal") or "0 kB"
    return int(text.split()[0]) / (1 << 20)


def tree_bytes(root: Path) -> int:
    """Bytes of the files under ``root`` (links not followed)."""
    return sum(
        os.lstat(os.path.join(dp, n)).st_size for dp, _, names in os.walk(root) for n in names
    )


def write_results(path: Path, text: str) -> None:
    """Write a results file whole (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(out: Path, lines: list[str]) -> None:
    """Write a results table (markdown lines) to ``out`` and show it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
