"""Atomic file writes: write to a temporary name beside the target, flush it to disk, then rename (never
half-written; after a crash either the old or the new file is there). A failed write leaves no temporary file."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path


def fsync_path(path) -> None:
    """Flush a file's (or a folder's: its entries') data to disk."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path) -> Path:
    """A temporary name beside ``path``, unique to this process (concurrent writers do not share one)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def commit(tmp, path) -> Path:
    """Flush ``tmp`` and rename it to ``path``, then flush the folder (the rename itself)."""
    fsync_path(tmp)
    os.replace(tmp, path)
    try:
        fsync_path(Path(path).parent)
    except OSError:  # some filesystems cannot fsync a folder; the rename is still atomic
        pass
    return Path(path)


@contextmanager
def atomic_path(path):
    """``with atomic_path(path) as tmp:`` write ``tmp`` (a temporary name beside ``path``); on leaving the block
    it is flushed and renamed to ``path``; if the block raises, ``tmp`` is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path, obj) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
    return Path(path)
