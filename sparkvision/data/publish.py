"""Atomic publication of output folders: write into a staging folder, then swap.

A published output ``OUT`` is a symbolic link to ``.OUT.versions/<version>``. Publishing
writes the new version beside the old one and replaces the link with ``os.replace``,
which is atomic on POSIX: a reader sees the old dataset or the new one, never a mix,
and a crash before the swap leaves the old one intact (the orphaned staging folder is
removed by the next run).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def versions_dir(output: str | os.PathLike[str]) -> Path:
    """The folder holding every version of ``output``."""
    out = Path(output).absolute()
    return out.parent / f".{out.name}.versions"


def stage(output: str | os.PathLike[str]) -> Path:
    """A fresh, empty staging folder for a new version of ``output`` (same filesystem).

    Staging folders left by crashed runs are removed first.
    """
    vdir = versions_dir(output)
    vdir.mkdir(parents=True, exist_ok=True)
    current = current_version(output)
    for old in vdir.iterdir():
        if old.name.startswith("staging-") or (current is not None and old.name != current.name and old.is_dir()):
            shutil.rmtree(old, ignore_errors=True)
    path = vdir / f"staging-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def current_version(output: str | os.PathLike[str]) -> Path | None:
    """The version folder ``output`` points to now, or None when nothing is published."""
    out = Path(output).absolute()
    if out.is_symlink():
        return (out.parent / os.readlink(out)).resolve()
    return None


def publish(staging: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Make ``staging`` the published content of ``output`` in one atomic step.

    Args:
        staging: A folder returned by ``stage(output)``, completely written.
        output: The path readers use.

    Returns:
        The version folder now behind ``output``.

    Raises:
        FileExistsError: ``output`` exists and is not a link made by this module (refuses to
            delete data it did not publish).
    """
    out = Path(output).absolute()
    staging = Path(staging)
    if out.exists() and not out.is_symlink():
        raise FileExistsError(
            f"{out} exists and is not a published sparkvision output (expected a link to "
            f"{versions_dir(out)}/...); move it away or choose another --output"
        )
    previous = current_version(out)
    final = staging.with_name(f"v-{uuid.uuid4().hex[:12]}")
    staging.rename(final)
    link_tmp = out.parent / f".{out.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(os.path.relpath(final, out.parent), link_tmp)
    os.replace(link_tmp, out)
    if previous is not None and previous != final:
        shutil.rmtree(previous, ignore_errors=True)
    return final
