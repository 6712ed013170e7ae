"""Where data lives: local paths and filesystem URLs behind one interface (``pyarrow.fs``).

Every path a user gives (``--input``, ``--output``, ``--data``, ``paths.store``) is a local
path (relative or absolute) or a URL with a scheme. Spark reads and writes such locations
through its own Hadoop filesystem (``Location.spark``); the driver's own small reads and
writes (annotation files, manifests, version pointers, Parquet footers) go through this
module, which maps each scheme to a ``pyarrow.fs`` filesystem:

=========================  =====================================  ===========================
scheme                     driver side (this module)               Spark side needs
=========================  =====================================  ===========================
path, ``file://``          ``LocalFileSystem``                     nothing
``hdfs://``, ``viewfs://`` ``HadoopFileSystem`` (libhdfs, JVM)     ``HADOOP_CONF_DIR``
``s3a://``, ``s3://``      ``S3FileSystem`` (AWS credentials)      hadoop-aws jar, credentials
``gs://``                  ``GcsFileSystem`` (Google credentials)  GCS connector jar
``abfss://``, ``abfs://``  fsspec ``adlfs`` wrapped for pyarrow    hadoop-azure jar
=========================  =====================================  ===========================

``pyarrow.fs`` is the kept library here (petastorm and Parquet already depend on it);
``fsspec`` only fills the one gap pyarrow 10 has (Azure). Local locations additionally get
atomic replacement (``write_bytes``) and an exclusive create (``create_exclusive``), which
object stores do not offer; callers that need them say what happens without.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow.fs as pafs

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

SCHEMES: dict[str, str] = {
    "file": "local",
    "hdfs": "hdfs",
    "viewfs": "hdfs",
    "s3a": "s3",
    "s3": "s3",
    "s3n": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "abfs": "azure",
    "abfss": "azure",
}
"""Scheme → filesystem family. Anything else is refused before Spark starts."""

NEEDS: dict[str, str] = {
    "local": "nothing",
    "hdfs": "the Hadoop client libraries (libhdfs, a JVM, HADOOP_HOME/ARROW_LIBHDFS_DIR) and HADOOP_CONF_DIR",
    "s3": "AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile); Spark also the hadoop-aws jar",
    "gcs": "Google credentials (GOOGLE_APPLICATION_CREDENTIALS); Spark also the GCS connector jar",
    "azure": "the adlfs package and Azure credentials; Spark also the hadoop-azure jar",
}
"""What each filesystem family needs on the driver (and Spark), for error messages and docs."""


class StorageError(OSError):
    """A location cannot be used: unknown scheme, or its filesystem cannot be reached."""


def scheme_of(value: str) -> str:
    """The URL scheme of ``value`` in lower case, ``""`` for a plain path."""
    m = _URL.match(value)
    return m.group(1).lower() if m else ""


def is_url(value: str) -> bool:
    """Whether ``value`` is a URL with a scheme (``file://`` included)."""
    return bool(_URL.match(value))


@dataclass(frozen=True)
class Location:
    """One file or folder: where it is (``url``) and how to reach it (``fs`` + ``path``).

    Attributes:
        url: Canonical URL: ``file:///abs/path`` for local locations, else as given (no
            trailing slash).
        scheme: ``file`` for local locations, else the URL's scheme.
        path: The path inside ``fs`` (absolute local path; ``bucket/key``; HDFS path).
    """

    url: str
    scheme: str
    path: str

    @property
    def family(self) -> str:
        """``local``, ``hdfs``, ``s3``, ``gcs`` or ``azure``."""
        return SCHEMES[self.scheme]

    @property
    def is_local(self) -> bool:
        """Whether this is on the local filesystem (``os`` calls work on ``path``)."""
        return self.family == "local"

    @property
    def fs(self) -> pafs.FileSystem:
        """The ``pyarrow.fs`` filesystem holding this location (cached per scheme and host)."""
        return _filesystem(self.family, self.scheme, urllib.parse.urlsplit(self.url).netloc)

    @property
    def spark(self) -> str:
        """The string Spark reads or writes: the URL (``file:///abs`` for local locations)."""
        return self.url

    @property
    def name(self) -> str:
        """The last path component."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        """The local path for local locations (as messages and manifests show them), else the URL."""
        return self.path if self.is_local else self.url

    def join(self, *parts: str) -> Location:
        """The location ``parts`` below this one (POSIX separators)."""
        tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
        if not tail:
            return self
        return Location(f"{self.url}/{tail}", self.scheme, f"{self.path.rstrip('/')}/{tail}")

    @property
    def parent(self) -> Location:
        """The folder holding this location."""
        head = self.path.rstrip("/").rsplit("/", 1)[0] or "/"
        if self.is_local:
            return Location(_file_url(head), "file", head)
        url = self.url.rsplit("/", 1)[0]
        return Location(url if "://" in url and url.split("://", 1)[1] else self.url, self.scheme, head)

    # ------------------------------------------------------------------ queries

    def _info(self) -> Any:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        """Whether a file or folder is here."""
        import pyarrow.fs as pafs

        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        """Whether a folder is here."""
        import pyarrow.fs as pafs

        return self._info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        """Whether a file is here."""
        import pyarrow.fs as pafs

        return self._info().type == pafs.FileType.File

    def size(self) -> int:
        """The file's size in bytes (-1 when it is not a file)."""
        import pyarrow.fs as pafs

        info = self._info()
        return int(info.size) if info.type == pafs.FileType.File else -1

    def children(self) -> list[Location]:
        """Files and folders directly in this folder, sorted by name ([] when it does not exist)."""
        return [self.join(rel) for rel, _ in self._list(recursive=False)]

    def child_dirs(self) -> list[Location]:
        """Folders directly in this folder, sorted by name."""
        import pyarrow.fs as pafs

        return [self.join(rel) for rel, info in self._list(recursive=False) if info.type == pafs.FileType.Directory]

    def files(self, recursive: bool = True) -> list[str]:
        """Regular files below this folder as sorted POSIX paths relative to it."""
        return list(self.file_sizes(recursive))

    def file_sizes(self, recursive: bool = True) -> dict[str, int]:
        """Regular files below this folder, sorted POSIX paths relative to it → size in bytes (one listing)."""
        import pyarrow.fs as pafs

        return {rel: int(info.size) for rel, info in self._list(recursive) if info.type == pafs.FileType.File}

    def broken_links(self) -> list[str]:
        """Symbolic links below this folder whose target does not exist, as sorted relative POSIX paths.

        ``pyarrow.fs`` (and Spark's file scan) leave them out of every listing; only local
        filesystems have them, so elsewhere this is always empty.
        """
        if not self.is_local:
            return []
        base = self.path.rstrip("/")
        found = []
        for folder, dirs, names in os.walk(base):
            for name in [*names, *dirs]:
                full = os.path.join(folder, name)
                if os.path.islink(full) and not os.path.exists(full):
                    found.append(os.path.relpath(full, base).replace(os.sep, "/"))
        return sorted(found)

    def _list(self, recursive: bool) -> Iterator[tuple[str, Any]]:
        """``(path relative to this folder, pyarrow FileInfo)`` of everything below it, sorted by path."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive)
        base = self.path.rstrip("/") + "/"
        for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.path):
            yield (info.path[len(base) :] if info.path.startswith(base) else info.base_name), info

    # ------------------------------------------------------------------ reads and writes

    def read_bytes(self) -> bytes:
        """The whole file (annotations, manifests, pointers, images read by ingest tasks).

        Raises:
            FileNotFoundError: Nothing is here.
        """
        if self.is_local:  # one open call: ingest tasks read every image through here
            try:
                with open(self.path, "rb") as fh:
                    return fh.read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):  # the last: a path below a file
                raise FileNotFoundError(f"{self}: no such file") from None
        if not self.is_file():
            raise FileNotFoundError(f"{self}: no such file")
        with self.fs.open_input_stream(self.path) as fh:
            return bytes(fh.read())

    def read_text(self) -> str:
        """The whole file as UTF-8 text (undecodable bytes replaced)."""
        return self.read_bytes().decode("utf-8", errors="replace")

    def open_input(self) -> Any:
        """A seekable binary file (for ``pyarrow.parquet.ParquetFile``)."""
        return self.fs.open_input_file(self.path)

    def write_bytes(self, data: bytes, durable: bool = True) -> None:
        """Write the whole file; readers see the old content or the new one, never a part.

        Local files are written beside the target and renamed over it; on HDFS and object
        stores a single ``open_output_stream`` upload becomes visible only when closed.

        Args:
            data: The whole content.
            durable: Local files: ``fsync`` before the rename (pointers, manifests). Bulk data
                files of an uncommitted version pass False, as Spark's own writers do: the
                version's pointer, written last, is what commits them.
        """
        if self.is_local:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            return
        self.parent.mkdirs()
        with self.fs.open_output_stream(self.path) as fh:
            fh.write(data)

    def write_text(self, text: str) -> None:
        """``write_bytes`` of UTF-8 text."""
        self.write_bytes(text.encode("utf-8"))

    def create_exclusive(self, data: bytes) -> bool:
        """Create the file with ``data`` only if nothing is there (local filesystems only).

        The file appears whole: ``data`` goes to a private temporary file that is then hard-linked
        to the name (``link`` fails when the name exists), so no reader ever sees it empty or half
        written. Where hard links are not supported it falls back to an exclusive create and write.

        Returns:
            True when this call created it, False when a file already existed.

        Raises:
            StorageError: Not a local location (object stores have no exclusive create here).
        """
        if not self.is_local:
            raise StorageError(f"{self.url}: exclusive create is only available on local filesystems")
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{os.path.basename(self.path)}.tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some network filesystems)
                pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True

    def mkdirs(self) -> None:
        """Create this folder and its parents (a no-op on object stores without folders)."""
        self.fs.create_dir(self.path, recursive=True)

    def delete_dir(self) -> None:
        """Remove this folder and everything in it (nothing when it does not exist)."""
        if self.is_dir():
            self.fs.delete_dir(self.path)

    def delete_file(self) -> None:
        """Remove this file (nothing when it does not exist)."""
        if self.is_file():
            self.fs.delete_file(self.path)


def location(value: str | os.PathLike[str] | Location) -> Location:
    """``value`` (a local path, relative or absolute, or a URL) as a ``Location``.

    Raises:
        StorageError: An unknown scheme, or a ``file://`` URL that is not of an absolute local path.
    """
    if isinstance(value, Location):
        return value
    text = os.fspath(value)
    if not text:
        raise StorageError("expected a path or URL, found an empty value")
    scheme = scheme_of(text)
    if not scheme:
        path = os.path.abspath(os.path.expanduser(text))
        return Location(_file_url(path), "file", path)
    if scheme not in SCHEMES:
        raise StorageError(
            f"{text}: unknown filesystem scheme '{scheme}://' (expected a local path or one of "
            f"{', '.join(s + '://' for s in SCHEMES)})"
        )
    parts = urllib.parse.urlsplit(text)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise StorageError(f"{text}: expected a file URL of an absolute path (file:///abs/path)")
        path = os.path.normpath(urllib.parse.unquote(parts.path))
        return Location(_file_url(path), "file", path)
    url = text.rstrip("/")
    family = SCHEMES[scheme]
    if family in ("s3", "gcs", "azure"):
        if not parts.netloc:
            raise StorageError(f"{text}: expected {scheme}://BUCKET/path, found no bucket")
        bucket = parts.netloc.partition("@")[0] if family == "azure" else parts.netloc
        path = f"{bucket}{parts.path}".rstrip("/")
    else:
        path = parts.path.rstrip("/") or "/"
    return Location(url, scheme, path)


def _file_url(path: str) -> str:
    """``file:///abs/path`` without percent-escaping (Spark and petastorm read ``split=train`` as is)."""
    return f"file://{path}" if path.startswith("/") else f"file:///{path}"


def check(value: str) -> Location:
    """``location(value)`` whose filesystem answers (the path itself need not exist).

    Raises:
        StorageError: Unknown scheme, or the filesystem cannot be reached (naming the scheme and
            what it needs).
    """
    loc = location(value)
    try:
        loc.exists()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError, ArrowException or its own types
        detail = " ".join(str(exc).split())[:200]
        raise StorageError(
            f"{value}: cannot reach the '{loc.scheme}://' filesystem ({detail}); it needs {NEEDS[loc.family]}"
        ) from exc
    return loc


@functools.lru_cache(maxsize=32)
def _filesystem(family: str, scheme: str, netloc: str) -> pafs.FileSystem:
    import pyarrow.fs as pafs

    if family == "local":
        return pafs.LocalFileSystem()
    if family == "hdfs":
        host, _, port = netloc.partition(":")
        return pafs.HadoopFileSystem(host or "default", int(port or 0))
    if family == "s3":
        return pafs.S3FileSystem()
    if family == "gcs":
        return pafs.GcsFileSystem()
    import fsspec

    try:
        azure = fsspec.filesystem("abfs", account_name=netloc.partition("@")[2].split(".")[0] or None)
    except ImportError as exc:
        raise StorageError(f"{scheme}://: the driver needs the adlfs package ({exc})") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(azure))
