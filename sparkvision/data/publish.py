"""Versioned outputs: write a version completely, then commit it with one small pointer file.

Every job output (an ingested dataset, a scoring output, a faces gallery) ``OUT`` looks like::

    OUT/_latest.json            the pointer: current version, checksum, created/committed, writer
    OUT/v-<id>/                 one version, written completely before it is committed
    OUT/v-<id>/_writer.json     written first: which run writes it (host, pid, started)
    OUT/v-<id>/_version.json    written last inside the version: it is complete (checksum, counts)
    OUT/_latest.lock            local filesystems only: held around the pointer's check-and-write

``<id>`` is ``<UTC time>-<random>``, so names sort by creation. Nothing is renamed, so the
same protocol works on HDFS and object stores (a single upload is atomic there).

The protocol (``begin`` → write → ``Publication.commit``):

1. ``begin`` reads the pointer: the version this run starts from (``base``).
2. The run writes ``OUT/v-<id>/`` completely (Spark), then ``_version.json``.
3. ``commit`` re-reads the pointer just before writing it and writes it only if it still names
   ``base`` (compare-and-swap; on local filesystems inside an exclusive lock file naming owner,
   host, pid and expiry). Otherwise ``PublishConflict`` names the other writer and its version,
   and this run's complete version stays on disk, uncommitted, for the user to inspect.
4. Retention (``Retention``): the current version and the newest ``keep_versions`` complete ones
   are kept, and no version is deleted within ``keep_min_age_hours`` of being superseded (or
   created), so a job still reading it keeps its files. A version another live run is still
   writing is never touched; a failed run removes only its own folder.

Readers call ``resolve``/``current``: the one function that turns ``OUT`` into the folder of
its current version, for training, scoring inputs, galleries and incremental scoring. The
layout of older sparkvision releases (``OUT`` a symlink to ``.OUT.versions/v-...``) is still
read, and the next ``commit`` migrates it (the old version folder is left where it was).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sparkvision import storage
from sparkvision.errors import CommandError
from sparkvision.storage import Location

if TYPE_CHECKING:
    from sparkvision.config import IngestConfig

log = logging.getLogger(__name__)

POINTER = "_latest.json"
LOCK = "_latest.lock"
LOCK_UNREADABLE_S = 5.0
"""An unreadable lock file is taken over only once it is this old: younger, it may be a live
writer's (a filesystem without hard links creates it first and writes it next)."""
VERSION_FILE = "_version.json"
WRITER_FILE = "_writer.json"
VERSION_PREFIX = "v-"
HISTORY = 100
"""Commits remembered in the pointer (for the age rule and ``data versions``)."""
LOCK_TTL_S = 120.0
"""A lock older than this is taken over (its holder died between check and write)."""
LOCK_WAIT_S = 30.0
"""How long a writer waits for another one's check-and-write before giving up."""
ABANDONED_HOURS = 24.0
"""An incomplete version of a writer on another host is removed only after this long."""


class PublishConflict(CommandError):
    """Another writer committed to the same output since this run started; nothing was lost."""

    exit_code = 3


@dataclass(frozen=True)
class Retention:
    """Which old versions a commit removes (``ingest.keep_versions``, ``ingest.keep_min_age_hours``)."""

    keep_versions: int = 3
    keep_min_age_hours: float = 24.0

    @classmethod
    def of(cls, cfg: IngestConfig) -> Retention:
        """The retention rule configured in the ``ingest`` section."""
        return cls(cfg.keep_versions, cfg.keep_min_age_hours)


@dataclass(frozen=True)
class Current:
    """What ``OUT`` resolves to now.

    Attributes:
        location: The version folder readers read.
        version: Its name (``v-...``; for the old symlink layout the link target's name), or None
            for a plain folder that was never published by this module.
        checksum: The content checksum of the version when known.
        layout: ``pointer``, ``legacy`` (symlink) or ``folder``.
        pointer: The pointer's content (``pointer`` layout), else empty.
    """

    location: Location
    version: str | None
    checksum: str | None
    layout: str
    pointer: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """URL of the version folder (``file:///...`` for local outputs)."""
        return self.location.url


def now_utc() -> datetime:
    """The current time (seam for tests of the age rule)."""
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        try:
            return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return None


def version_created(name: str) -> datetime | None:
    """When version ``v-<UTC time>-<random>`` was created, from its name (None for other names)."""
    try:
        return datetime.strptime(name.split("-")[1], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    except (IndexError, ValueError):
        return None


def new_version_name(t: datetime | None = None) -> str:
    """``v-<UTC time to the microsecond>-<8 random hex>``: unique, and sorts by creation."""
    t = t or now_utc()
    return f"{VERSION_PREFIX}{t.strftime('%Y%m%dT%H%M%S%f')}Z-{uuid.uuid4().hex[:8]}"


def writer_identity() -> dict[str, Any]:
    """Who writes: host, pid, user and when this process started writing."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return {"host": socket.gethostname(), "pid": os.getpid(), "user": user, "started_at": _iso(now_utc())}


def describe_writer(writer: Mapping[str, Any]) -> str:
    """``user@host pid N`` of a writer record."""
    return f"{writer.get('user', '?')}@{writer.get('host', '?')} pid {writer.get('pid', '?')}"


def _read_json(loc: Location) -> dict[str, Any] | None:
    try:
        data = json.loads(loc.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _legacy_target(out: Location) -> Location | None:
    """The version folder an old-layout symlink ``OUT`` points to, or None."""
    if out.is_local and os.path.islink(out.path):
        return storage.location(os.path.realpath(out.path))
    return None


# --------------------------------------------------------------------------- readers


def resolve(output: str | os.PathLike[str] | Location) -> Current | None:
    """The current version of ``output``, or None when nothing was ever committed there.

    ``output`` may be a published output (pointer or the old symlink layout) or a folder that
    already is one version (``OUT/v-...``, or a dataset folder written some other way), which
    resolves to itself.

    Raises:
        FileNotFoundError: The pointer names a version folder that does not exist.
    """
    out = output if isinstance(output, Location) else storage.location(output)
    target = _legacy_target(out)
    if target is not None:
        manifest = _read_json(target.join("manifest.json")) or {}
        return Current(target, target.name, manifest.get("checksum"), "legacy")
    pointer = _read_json(out.join(POINTER))
    if pointer is not None and pointer.get("version"):
        folder = out.join(str(pointer["version"]))
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{out.join(POINTER)} names version {pointer['version']}, but {folder} does not exist"
            )
        return Current(folder, str(pointer["version"]), pointer.get("checksum"), "pointer", pointer)
    if out.is_dir():
        record = _read_json(out.join(VERSION_FILE))
        if record is not None:
            return Current(out, out.name, record.get("checksum"), "folder")
        if out.join("manifest.json").is_file() or out.join("_summary.json").is_file():
            manifest = _read_json(out.join("manifest.json")) or {}
            return Current(out, None, manifest.get("checksum"), "folder")
    return None


def current(output: str | os.PathLike[str] | Location, what: str = "published output") -> Current:
    """``resolve(output)``, required to exist.

    Raises:
        FileNotFoundError: Nothing is published at ``output``.
    """
    found = resolve(output)
    if found is None:
        out = output if isinstance(output, Location) else storage.location(output)
        raise FileNotFoundError(f"{out}: expected a {what} (with {POINTER}), found none")
    return found


# --------------------------------------------------------------------------- writers


class Publication:
    """One run's new version of an output: write into ``location``, then ``commit``.

    Use as a context manager: leaving it with an exception removes this run's own version
    folder (and nothing else); a ``PublishConflict`` keeps it, since it is complete.
    """

    def __init__(self, output: str | os.PathLike[str], retention: Retention) -> None:
        self.output = storage.location(output)
        self.retention = retention
        self.writer = writer_identity()
        self.base = resolve(self.output)
        if self.base is not None and self.base.layout == "folder":
            raise FileExistsError(
                f"{self.output} exists and is not a published sparkvision output (expected {POINTER} "
                f"beside v-* version folders); move it away or choose another --output"
            )
        if self.base is None:
            _refuse_foreign(self.output)
        self.version = new_version_name()
        self.legacy = self.base is not None and self.base.layout == "legacy"
        if self.legacy:
            # The old layout's OUT is a link into the previous version: build the new layout beside it.
            self._root = self.output.parent.join(f".{self.output.name}.migrate-{self.version}")
        else:
            self._root = self.output
        self.location = self._root.join(self.version)
        self.committed = False
        self.location.mkdirs()
        self.location.join(WRITER_FILE).write_text(json.dumps({**self.writer, "base": self.base_version}))

    @property
    def base_version(self) -> str | None:
        """The version this run started from (None: the output was empty)."""
        return self.base.version if self.base is not None else None

    @property
    def url(self) -> str:
        """URL of the folder to write (Spark writes there)."""
        return self.location.url

    def __enter__(self) -> Publication:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is not None and not self.committed and not isinstance(exc, PublishConflict):
            self.abandon()

    def abandon(self) -> None:
        """Remove this run's own version folder (it was never committed)."""
        if self.committed:
            return
        with contextlib.suppress(OSError):
            (self._root if self.legacy else self.location).delete_dir()

    def commit(self, checksum: str, counts: Mapping[str, Any] | None = None, kind: str = "") -> dict[str, Any]:
        """Make this run's version current, if the output is still at the version it started from.

        Args:
            checksum: Content checksum of the version (the dataset's ``manifest.checksum``).
            counts: Row counts shown by ``sparkvision data versions``.
            kind: What the output holds (``dataset``, ``scores``, ``gallery``, ...).

        Returns:
            The pointer now in ``OUT/_latest.json``.

        Raises:
            PublishConflict: Another writer committed first (this version is kept, uncommitted).
        """
        created = version_created(self.version) or now_utc()
        record = {"version": self.version, "checksum": checksum, "created_at": _iso(created), "kind": kind,
                  "counts": dict(counts or {}), "writer": self.writer, "base": self.base_version}  # fmt: skip
        self.location.join(VERSION_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        lock_at = self.output.parent.join(f".{self.output.name}.lock") if self.legacy else self.output.join(LOCK)
        with pointer_lock(lock_at, self.writer):
            found = resolve(self.output)
            now_version = found.version if found is not None else None
            layouts = (found.layout if found else None, self.base.layout if self.base else None)
            if now_version != self.base_version or layouts[0] != layouts[1]:
                raise self._conflict(found)
            history = list((found.pointer if found is not None else {}).get("history", []))
            pointer = {**record, "format": 1, "committed_at": _iso(now_utc()), "previous": self.base_version,
                       "history": [{"version": self.version, "committed_at": None}, *history][:HISTORY]}  # fmt: skip
            pointer["history"][0]["committed_at"] = pointer["committed_at"]
            if self.legacy:
                assert self.base is not None
                pointer["migrated_from"] = str(self.base.location)
                self._root.join(POINTER).write_text(json.dumps(pointer, indent=2, sort_keys=True) + "\n")
                os.unlink(self.output.path)
                os.rename(self._root.path, self.output.path)
                self.location = self.output.join(self.version)
            else:
                self.output.join(POINTER).write_text(json.dumps(pointer, indent=2, sort_keys=True) + "\n")
            self.committed = True
        if self.legacy:
            assert self.base is not None
            log.warning("%s: migrated from the symlink layout of older releases; the previous version stays "
                        "readable at %s (remove it when no job reads it)", self.output, self.base.location)  # fmt: skip
        removed = cleanup(self.output, self.retention)
        if removed:
            log.info("%s: removed %d old version(s): %s", self.output, len(removed), ", ".join(removed))
        return pointer

    def _conflict(self, found: Current | None) -> PublishConflict:
        kept = f"this run's version is kept, uncommitted, at {self.location}"
        if found is None:
            return PublishConflict(f"{self.output}: the version this run started from ({self.base_version}) "
                                   f"is no longer published; {kept}")  # fmt: skip
        other = describe_writer(found.pointer.get("writer", {})) if found.pointer else "an older sparkvision"
        when = found.pointer.get("committed_at", "?") if found.pointer else "?"
        return PublishConflict(
            f"{self.output}: another writer ({other}) committed version {found.version} at {when} while this run "
            f"was writing (it started from {self.base_version or 'an empty output'}); {kept}; rerun to build "
            f"on {found.version}"
        )


def begin(output: str | os.PathLike[str], retention: Retention | None = None) -> Publication:
    """Start a new version of ``output`` (see the module docstring for the protocol).

    Raises:
        FileExistsError: ``output`` exists and is not a published output (nothing is touched).
    """
    return Publication(output, retention or Retention())


def _refuse_foreign(out: Location) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is a file, not a published sparkvision output; "
                              "choose another --output")  # fmt: skip
    foreign = [
        c.name for c in out.children() if not (c.name.startswith(VERSION_PREFIX) or c.name.startswith("_latest"))
    ]
    if foreign:
        raise FileExistsError(
            f"{out} exists and is not a published sparkvision output (found {foreign[0]}, expected {POINTER} "
            f"beside v-* version folders); move it away or choose another --output"
        )


@contextlib.contextmanager
def pointer_lock(lock: Location, writer: Mapping[str, Any]) -> Iterator[None]:
    """Hold ``lock`` (exclusive create) around the pointer's check-and-write on local filesystems.

    The lock file names owner, host, pid and expiry; one whose holder died (its pid is gone on
    this host, or it expired) is taken over. HDFS and object stores get no lock here: the
    compare-and-swap re-read just before the write is all they have (see README).

    Raises:
        PublishConflict: Another live writer held the lock for ``LOCK_WAIT_S``.
    """
    if not lock.is_local:
        yield
        return
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        body = {**writer, "owner": owner, "expires": time.time() + LOCK_TTL_S}
        if lock.create_exclusive(json.dumps(body).encode()):
            break
        holder = _read_json(lock) or {}
        if _lock_is_stale(holder, lock):
            log.warning("%s: taking over the lock of %s (gone or expired)", lock, describe_writer(holder))
            with contextlib.suppress(FileNotFoundError):
                if (_read_json(lock) or {}).get("owner") == holder.get("owner"):
                    os.unlink(lock.path)
            continue
        if time.monotonic() > deadline:
            raise PublishConflict(f"{lock}: held by {describe_writer(holder)} for more than {LOCK_WAIT_S:.0f}s "
                                  "while committing; try again")  # fmt: skip
        time.sleep(0.05)
    try:
        yield
    finally:
        if (_read_json(lock) or {}).get("owner") == owner:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock.path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_gone(writer: Mapping[str, Any]) -> bool:
    """Whether a writer record names a process on this host that no longer runs."""
    return writer.get("host") == socket.gethostname() and not _pid_alive(int(writer.get("pid") or 0) or -1)


def _age_s(path: Location) -> float:
    """Seconds since ``path`` (a local file) was last written; 0 when it is gone."""
    try:
        return time.time() - os.stat(path.path).st_mtime
    except FileNotFoundError:
        return 0.0


def _lock_is_stale(holder: Mapping[str, Any], lock: Location) -> bool:
    """Whether the lock ``lock`` whose content reads as ``holder`` may be taken over: expired, its
    writer gone, or unreadable for longer than ``LOCK_UNREADABLE_S`` (a holder that died between
    create and write; younger, it may still be writing)."""
    if not holder:
        return _age_s(lock) > LOCK_UNREADABLE_S
    return float(holder.get("expires") or 0) < time.time() or _writer_gone(holder)


# --------------------------------------------------------------------------- listing and retention


@dataclass(frozen=True)
class VersionInfo:
    """One version folder of an output, as ``sparkvision data versions`` lists it."""

    name: str
    location: Location
    state: str
    """``current``, ``previous`` (committed once), ``uncommitted`` (complete, lost a race),
    ``incomplete`` (being written, or its writer died) or ``legacy`` (old symlink layout)."""
    created_at: datetime | None
    superseded_at: datetime | None
    checksum: str | None
    counts: dict[str, Any]
    writer: dict[str, Any]


def versions(output: str | os.PathLike[str]) -> list[VersionInfo]:
    """Every version folder of ``output``, oldest first (legacy folders of the old layout first)."""
    out = storage.location(output)
    found = resolve(out)
    pointer = found.pointer if found is not None else {}
    history = [h.get("version") for h in pointer.get("history", [])]
    superseded = _superseded_at(pointer)
    infos: list[VersionInfo] = []
    legacy_dir = out.parent.join(f".{out.name}.versions")
    if out.is_local and legacy_dir.is_dir():
        for folder in legacy_dir.child_dirs():
            if folder.name.startswith(VERSION_PREFIX):
                manifest = _read_json(folder.join("manifest.json")) or {}
                is_current = found is not None and found.layout == "legacy" and found.location.path == folder.path
                infos.append(VersionInfo(folder.name, folder, "current" if is_current else "legacy",
                                         _parse_iso((manifest.get("run") or {}).get("created_at")), None,
                                         manifest.get("checksum"), _manifest_counts(manifest), {}))  # fmt: skip
    if found is not None and found.layout == "legacy":
        return infos
    for folder in out.child_dirs():
        if not folder.name.startswith(VERSION_PREFIX):
            continue
        record = _read_json(folder.join(VERSION_FILE))
        if record is None:
            writer = _read_json(folder.join(WRITER_FILE)) or {}
            infos.append(VersionInfo(folder.name, folder, "incomplete", version_created(folder.name), None, None, {},
                                     writer))  # fmt: skip
            continue
        if found is not None and folder.name == found.version:
            state = "current"
        else:
            state = "previous" if folder.name in history else "uncommitted"
        infos.append(VersionInfo(folder.name, folder, state, _parse_iso(record.get("created_at")),
                                 superseded.get(folder.name), record.get("checksum"), dict(record.get("counts") or {}),
                                 dict(record.get("writer") or {})))  # fmt: skip
    return infos


def _superseded_at(pointer: Mapping[str, Any]) -> dict[str, datetime]:
    """Version → when the next commit replaced it (history is newest first)."""
    history = list(pointer.get("history", []))
    out: dict[str, datetime] = {}
    for newer, older in zip(history, history[1:], strict=False):
        t = _parse_iso(newer.get("committed_at"))
        if t is not None and older.get("version"):
            out[str(older["version"])] = t
    return out


def _manifest_counts(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {k: manifest[k] for k in ("output_rows", "quarantined", "rows") if k in manifest}


def cleanup(output: str | os.PathLike[str], retention: Retention, now: datetime | None = None) -> list[str]:
    """Remove versions of ``output`` past the retention rule; returns the names removed.

    Kept: the current version; the newest ``keep_versions`` complete versions (current
    included); every version superseded (or, never committed, created) less than
    ``keep_min_age_hours`` ago; every incomplete version unless its writer is gone (a dead pid on
    this host, or ``ABANDONED_HOURS`` old). Legacy folders of the old layout are never removed.
    """
    now = now or now_utc()
    min_age = retention.keep_min_age_hours * 3600.0
    infos = [v for v in versions(output) if v.state != "legacy"]
    complete = sorted((v for v in infos if v.state != "incomplete"), key=lambda v: v.name, reverse=True)
    keep = {v.name for v in complete[: max(1, retention.keep_versions)]}
    keep |= {v.name for v in infos if v.state == "current"}
    removed: list[str] = []
    for v in infos:
        if v.name in keep:
            continue
        since = v.superseded_at or v.created_at or now
        age = (now - since).total_seconds()
        if age < min_age:
            continue
        if v.state == "incomplete" and not (_writer_gone(v.writer) or age >= ABANDONED_HOURS * 3600.0):
            continue
        try:
            v.location.delete_dir()
        except OSError as exc:  # keep going: retention is housekeeping, the commit already happened
            log.warning("could not remove old version %s: %s", v.location, exc)
            continue
        removed.append(v.name)
    return removed
