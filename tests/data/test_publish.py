"""Atomic publication: readers see the old version or the new one, never a mix."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkvision.data import publish


def _write_version(out: Path, text: str) -> Path:
    staging = publish.stage(out)
    (staging / "part.txt").write_text(text)
    return publish.publish(staging, out)


def test_publish_swaps_and_removes_previous(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    first = _write_version(out, "one")
    assert (out / "part.txt").read_text() == "one" and out.is_symlink()
    second = _write_version(out, "two")
    assert (out / "part.txt").read_text() == "two"
    assert not first.exists() and second.exists()
    assert publish.current_version(out) == second


def test_crash_before_publish_keeps_previous(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    _write_version(out, "good")
    staging = publish.stage(out)
    (staging / "part.txt").write_text("half-written")
    # the job dies here: no publish()
    assert (out / "part.txt").read_text() == "good"
    _write_version(out, "next")  # the next run clears the orphaned staging folder
    assert not staging.exists()
    assert sorted(p.name.split("-")[0] for p in publish.versions_dir(out).iterdir()) == ["v"]


def test_refuses_to_replace_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a published sparkvision output"):
        _write_version(out, "x")
    assert (out / "keep.txt").read_text() == "mine"
