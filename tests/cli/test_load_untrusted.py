"""``kbuild load`` of a hostile archive: one clear error line, no traceback, nothing tagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbuild.cli.main import main
from kbuild.layerstore import Store
from tests.layerstore.test_documents import archive_of


@pytest.mark.parametrize(("index", "message"), [
    (b'{"manifests": [{"digest": "sha256:' + b"a" * 64 + b'", "size": "abc"}]}',
     "index.json: field 'manifests[0].size' must be an integer >= 0, not \"abc\""),
    (b"[" * 100_000 + b"]" * 100_000, "index.json: JSON nested too deeply"),
    (b"null", "index.json: the document must be a JSON object, not null"),
])
def test_load_of_a_malformed_archive(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     index: bytes, message: str) -> None:
    path = archive_of(tmp_path / "bad.tar", {"oci-layout": json.dumps(
        {"imageLayoutVersion": "1.0.0"}).encode(), "index.json": index})
    root = tmp_path / "root"
    with pytest.raises(SystemExit) as info:
        main(["--root", str(root), "load", "-i", str(path)])
    _, err = capsys.readouterr()
    assert info.value.code == 1
    assert message in err and "Traceback" not in err
    assert Store(root).images() == []
