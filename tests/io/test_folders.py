"""Where a command may write a folder (`check_destination`)."""

from __future__ import annotations

import pytest

from tfcseg.errors import TfcsegError
from tfcseg.io.folders import check_destination


def test_destinations_beside_a_checkpoint_file_or_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ck").mkdir()
    (tmp_path / "w.pth").write_bytes(b"x")
    check_destination(tmp_path / "pub", tmp_path / "ck")  # a sibling: fine
    check_destination(tmp_path / "pub", tmp_path / "w.pth")  # a new folder beside a file: fine
    check_destination("pub")
    for out, source, says in ((tmp_path / "ck", tmp_path / "ck", "own folder"),
                              (tmp_path / "ck" / "x", tmp_path / "ck", "inside"),
                              (tmp_path.parent, tmp_path / "ck", "current folder"),
                              (".", None, "current folder"),
                              (tmp_path / "w.pth", tmp_path / "w.pth", "holds the checkpoint")):
        with pytest.raises(TfcsegError, match=says):
            check_destination(out, source)
    monkeypatch.chdir(tmp_path / "ck")
    for out in (tmp_path, tmp_path.parent):  # the folder of the file, or one around it
        with pytest.raises(TfcsegError, match="current folder|holds the checkpoint"):
            check_destination(out, tmp_path / "w.pth")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.safetensors").write_bytes(b"x")
    with pytest.raises(TfcsegError, match="holds the checkpoint"):
        check_destination(tmp_path / "a", tmp_path / "a" / "m.safetensors")
