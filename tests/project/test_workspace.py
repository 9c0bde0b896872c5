"""Where the shared data lives: ``find_shared_data`` / ``shared_dir`` / ``data_option`` read
``$TOKFUSE_SHARED`` (the shared folder or its data folder) and report a missing folder by name."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from workspace import data_option, find_shared_data, shared_dir


@pytest.fixture
def shared(tmp_path, monkeypatch):
    (tmp_path / "data" / "video" / "M3SVD").mkdir(parents=True)
    monkeypatch.setenv("TOKFUSE_SHARED", str(tmp_path))
    return tmp_path


def test_env_folder_and_its_data_folder(shared, monkeypatch):
    assert find_shared_data("video", start=shared) == shared / "data"
    monkeypatch.setenv("TOKFUSE_SHARED", str(shared / "data"))
    assert shared_dir("video/M3SVD", start=shared) == shared / "data" / "video" / "M3SVD"


def test_missing_sub_folder_named(shared):
    assert find_shared_data("no_such_set", start=shared) is None
    with pytest.raises(FileNotFoundError, match="shared/data/no_such_set not found"):
        shared_dir("no_such_set", start=shared)


def test_data_option(shared, capsys):
    p = argparse.ArgumentParser(prog="prog")
    assert data_option(p, "/some/where", "video/M3SVD") == Path("/some/where")
    assert data_option(p, None, "video/M3SVD", start=shared) == shared / "data" / "video" / "M3SVD"
    with pytest.raises(SystemExit) as e:
        data_option(p, None, "no_such_set", start=shared)
    assert e.value.code == 2 and "shared/data/no_such_set not found" in capsys.readouterr().err
