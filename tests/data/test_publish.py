"""Versioned outputs: write a version completely, commit it with one pointer; readers resolve it."""

from __future__ import annotations

import json
import os
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from sparkvision.data import publish
from sparkvision.data.publish import PublishConflict, Retention

KEEP_ALL = Retention(keep_versions=100, keep_min_age_hours=0)


def _write_version(out: Path, text: str, retention: Retention = KEEP_ALL) -> str:
    with publish.begin(out, retention) as p:
        Path(p.location.path, "part.txt").write_text(text)
        p.commit(checksum=f"sum-{text}", counts={"rows": len(text)}, kind="test")
    return p.version


def _current_text(out: Path) -> str:
    return Path(publish.current(out).location.path, "part.txt").read_text()


def test_commit_writes_pointer_last_and_readers_follow_it(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    first = _write_version(out, "one")
    pointer = json.loads((out / publish.POINTER).read_text())
    assert pointer["version"] == first and pointer["checksum"] == "sum-one" and pointer["previous"] is None
    assert pointer["writer"]["pid"] == os.getpid() and not out.is_symlink()
    second = _write_version(out, "two")
    assert _current_text(out) == "two"
    assert publish.current(out).version == second and publish.current(out).checksum == "sum-two"
    # the previous version is still there, intact, for readers that pinned it
    assert (out / first / "part.txt").read_text() == "one"
    assert [(v.name, v.state) for v in publish.versions(out)] == [(first, "previous"), (second, "current")]
    assert not (out / publish.LOCK).exists()


def test_crash_before_commit_keeps_previous_and_removes_only_own_folder(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    good = _write_version(out, "good")
    with pytest.raises(OSError, match="disk full"), publish.begin(out, KEEP_ALL) as p:
        Path(p.location.path, "part.txt").write_text("half-written")
        raise OSError("disk full")
    assert not Path(p.location.path).exists()
    assert _current_text(out) == "good" and publish.current(out).version == good


@pytest.mark.parametrize(
    ("keep", "min_age_hours", "age_hours", "kept"),
    [
        (3, 0, 0, 3),  # keep N
        (1, 0, 0, 1),  # only the current one
        (1, 2, 1, 5),  # superseded an hour ago: younger than the age rule, nothing goes
        (1, 2, 3, 1),  # superseded three hours ago: past both rules
        (2, 2, 3, 2),
    ],
)
def test_retention_keeps_n_and_never_deletes_young_versions(
    tmp_path: Path, keep: int, min_age_hours: float, age_hours: float, kept: int
) -> None:
    out = tmp_path / "dataset"
    names = [_write_version(out, f"v{i}") for i in range(5)]
    later = publish.now_utc() + timedelta(hours=age_hours)
    removed = publish.cleanup(out, Retention(keep, min_age_hours), now=later)
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("v-"))
    assert left == names[len(names) - kept :] and sorted(removed) == names[: len(names) - kept]
    assert _current_text(out) == "v4"


def test_cleanup_never_touches_another_live_writers_folder(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    _write_version(out, "a")
    other = publish.begin(out, KEEP_ALL)  # a concurrent run, still writing (this pid is alive)
    Path(other.location.path, "part.txt").write_text("in progress")
    _write_version(out, "b", Retention(1, 0))
    assert Path(other.location.path, "part.txt").read_text() == "in progress"
    states = {v.name: v.state for v in publish.versions(out)}
    assert states[other.version] == "incomplete" and list(states.values()).count("current") == 1


def test_second_writer_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    base = _write_version(out, "base")
    first, second = publish.begin(out, KEEP_ALL), publish.begin(out, KEEP_ALL)
    for p, text in ((first, "first"), (second, "second")):
        Path(p.location.path, "part.txt").write_text(text)
    first.commit("sum-first")
    with pytest.raises(PublishConflict) as err:
        second.commit("sum-second")
    message = str(err.value)
    assert "\n" not in message and err.value.exit_code == 3
    assert f"committed version {first.version}" in message and f"pid {os.getpid()}" in message
    assert f"started from {base}" in message and second.version in message
    assert _current_text(out) == "first"
    assert Path(second.location.path, "part.txt").read_text() == "second"  # the loser's version is kept
    assert {v.name: v.state for v in publish.versions(out)}[second.version] == "uncommitted"


def test_concurrent_commits_one_wins(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    pubs = [publish.begin(out, KEEP_ALL) for _ in range(4)]
    outcomes: list[str] = []
    start = threading.Barrier(len(pubs))

    def run(p: publish.Publication) -> None:
        Path(p.location.path, "part.txt").write_text(p.version)
        start.wait()
        try:
            p.commit("x")
            outcomes.append("won")
        except PublishConflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=run, args=(p,)) for p in pubs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 3 + ["won"]
    winner = next(p for p in pubs if p.committed)
    assert _current_text(out) == winner.version
    assert all(Path(p.location.path, "part.txt").read_text() == p.version for p in pubs)


def test_stale_lock_of_a_dead_writer_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    out.mkdir()
    dead = {"host": os.uname().nodename, "pid": 2**22 + 17, "owner": "x", "expires": 4e9}
    (out / publish.LOCK).write_text(json.dumps(dead))
    _write_version(out, "after")
    assert _current_text(out) == "after" and not (out / publish.LOCK).exists()


def test_an_unreadable_lock_is_taken_over_only_once_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty lock may be a live writer's between create and write: waited for while young."""
    out = tmp_path / "dataset"
    out.mkdir()
    (out / publish.LOCK).write_text("")
    monkeypatch.setattr(publish, "LOCK_WAIT_S", 0.3)
    with pytest.raises(PublishConflict, match="held by"):
        _write_version(out, "young")
    old = os.stat(out / publish.LOCK).st_mtime - 2 * publish.LOCK_UNREADABLE_S
    os.utime(out / publish.LOCK, (old, old))
    _write_version(out, "after")
    assert _current_text(out) == "after" and not (out / publish.LOCK).exists()


def test_an_exclusive_create_appears_whole_and_once(tmp_path: Path) -> None:
    from sparkvision import storage

    lock = storage.location(tmp_path / "lock")
    assert lock.create_exclusive(b'{"owner": "a"}')
    assert not lock.create_exclusive(b'{"owner": "b"}')
    assert (tmp_path / "lock").read_bytes() == b'{"owner": "a"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock"]  # no temporary file left


def _legacy_layout(tmp_path: Path, text: str) -> Path:
    """What the previous release published: OUT -> .OUT.versions/v-<hex>."""
    out = tmp_path / "dataset"
    target = tmp_path / ".dataset.versions" / "v-0123456789ab"
    target.mkdir(parents=True)
    (target / "part.txt").write_text(text)
    (target / "manifest.json").write_text(json.dumps({"checksum": "old-sum"}))
    os.symlink(os.path.relpath(target, tmp_path), out)
    return out


def test_old_symlink_layout_is_read_and_migrated_by_the_next_commit(tmp_path: Path) -> None:
    out = _legacy_layout(tmp_path, "old")
    found = publish.current(out)
    assert (found.layout, found.version, found.checksum, _current_text(out)) == ("legacy", "v-0123456789ab",
                                                                                 "old-sum", "old")  # fmt: skip
    new = _write_version(out, "new")
    assert not out.is_symlink() and out.is_dir()
    assert publish.current(out).version == new and _current_text(out) == "new"
    pointer = json.loads((out / publish.POINTER).read_text())
    assert pointer["previous"] == "v-0123456789ab" and pointer["migrated_from"].endswith(
        ".dataset.versions/v-0123456789ab"
    )
    assert (tmp_path / ".dataset.versions" / "v-0123456789ab" / "part.txt").read_text() == "old"  # not deleted
    assert not list(tmp_path.glob(".dataset.migrate-*"))


def test_refuses_to_publish_into_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a published sparkvision output"):
        _write_version(out, "x")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_pointer_to_a_missing_version_names_it(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    name = _write_version(out, "a")
    shutil.rmtree(out / name)
    with pytest.raises(FileNotFoundError, match=f"names version {name}"):
        publish.current(out)
