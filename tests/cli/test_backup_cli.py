"""backup, restore and cert: the passphrase's ways in, and user mistakes
reported before any host is touched (against real hosts:
tests/kubernetes/test_backup_e2e.py)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from kbuild.cli.backup import backup_passphrase
from kbuild.errors import UsageError
from kbuild.runtime import clusterfile as cfmod
from tests.cli.conftest import Outcome


def test_passphrase_ways(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "pp"
    secret.write_text("from-file\nsecond line\n")
    monkeypatch.delenv("KBUILD_BACKUP_PASSPHRASE", raising=False)
    assert backup_passphrase(False, None) is None
    assert backup_passphrase(False, str(secret)) == "from-file"
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    assert backup_passphrase(True, None) == "from-stdin"
    monkeypatch.setenv("KBUILD_BACKUP_PASSPHRASE", "from-env")
    assert backup_passphrase(False, None) == "from-env"
    assert backup_passphrase(False, str(secret)) == "from-file"  # a flag wins over the env
    with pytest.raises(UsageError, match="one way"):
        backup_passphrase(True, str(secret))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        backup_passphrase(False, str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="cannot read it"):
        backup_passphrase(False, str(tmp_path / "nope"))


def test_mistakes_before_any_host(cli: Callable[..., Outcome], tmp_path: Path) -> None:
    proc = cli("backup")
    assert proc.returncode == 2 and "--output" in proc.stderr
    proc = cli("backup", "-o", str(tmp_path / "b.kbk"))
    assert proc.returncode == 1 and "no cluster is recorded" in proc.stderr
    proc = cli("restore", str(tmp_path / "missing.kbk"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = cli("cert", "check", "--cluster-name", "nope")
    assert proc.returncode == 1 and "no cluster named 'nope'" in proc.stderr
    proc = cli("cert", "check", "--format", "xml")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_a_cluster_of_no_kind_has_no_backup(cli: Callable[..., Outcome], tmp_path: Path) -> None:
    """An image that is not Kubernetes (and is not in the store): its driver has no such flow."""
    sdir = tmp_path / "state" / "c1"
    sdir.mkdir(parents=True)
    cfmod.save(cfmod.from_flags("i:1", masters=["10.0.0.1"], cluster_name="c1"),
               sdir / "Clusterfile")  # fmt: skip
    proc = cli("backup", "-o", str(tmp_path / "b.kbk"), "--progress", "plain")
    assert proc.returncode == 1 and "cluster c1 (of no known kind) has no backup" in proc.stderr
    assert not (tmp_path / "b.kbk").exists()


def test_help_lists_the_day2_commands(cli: Callable[..., Outcome]) -> None:
    out = cli("--help").stdout
    for name in ("backup", "restore", "cert"):
        assert f"  {name} " in out
    assert "check" in cli("cert", "--help").stdout
