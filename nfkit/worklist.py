"""Sharded batch jobs: a list of work items split by worker, each written atomically and skipped when complete,
and a merged manifest at the end.

Used by ``nfkit convert DIR OUT_DIR`` and ``nfkit export DIR --mesh MESH_DIR`` (many field files), in one
process, as ``--rank i --world-size n`` workers started by hand, or as the ranks of a torchrun job
(``torchrun --nproc_per_node 2 -m nfkit.apps convert ...``; docs/SCALING.md).

* Worker ``rank`` of ``world`` takes items ``rank, rank + world, ...`` of the list (the list is sorted, so every
  worker sees the same one).
* An item is complete when its record ``OUT/.worklist/<key>.json`` exists and so do all its output files. The
  record is written (atomically) only after the item's outputs were written (atomically), so a worker killed mid-way
  leaves either nothing or a complete item: a rerun does the missing items only.
* An item that fails with bad input (:class:`~nfkit.errors.NfkitError`) is reported and the worker goes on; at the
  end the job fails with one line naming how many items failed and the first reason (a rerun retries them).
* ``OUT/manifest.json``: every item with its outputs and result, ``complete`` (all items done) and ``missing``
  (keys still to do). Written by rank 0 after a barrier in a torchrun job, else by each worker when it finishes (the
  last one to finish writes the complete manifest).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from nfkit.atomic import write_json_atomic
from nfkit.errors import NfkitError

RECORDS = ".worklist"


@dataclass(frozen=True)
class WorkItem:
    """One unit of a batch job: ``key`` (unique, a file-name stem), ``source`` (the input file) and the ``outputs``
    it writes."""

    key: str
    source: str
    outputs: tuple[str, ...]


def worker(rank: int = -1, world_size: int = -1) -> tuple[int, int]:
    """(rank, world size) of this worker: the torchrun job's when it joined one, else the arguments, else ``$RANK`` /
    ``$WORLD_SIZE``, else (0, 1)."""
    from nfkit import distributed

    ctx = distributed.current()
    if ctx is not None:
        return ctx.rank, ctx.world_size
    rank = rank if rank >= 0 else int(os.environ.get("RANK", 0))
    world = world_size if world_size >= 1 else int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise NfkitError(f"--rank {rank}: expected 0 <= rank < --world-size ({world})")
    return rank, world


def my_items(items: list, rank: int, world: int) -> list:
    """This worker's share: items ``rank, rank + world, ...``."""
    return items[rank::world]


def record_path(out_dir, key: str) -> Path:
    return Path(out_dir) / RECORDS / f"{key}.json"


def read_record(out_dir, item: WorkItem) -> dict | None:
    """The item's record when the item is complete (record and every output present), else None."""
    path = record_path(out_dir, item.key)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not all(Path(o).is_file() for o in item.outputs):
        return None
    return rec


def merge_manifest(items: list[WorkItem], out_dir, job: dict) -> dict:
    """Write ``OUT/manifest.json`` from the records on disk; returns it."""
    entries, missing = [], []
    for it in items:
        rec = read_record(out_dir, it)
        if rec is None:
            missing.append(it.key)
            continue
        entries.append({"key": it.key, "source": it.source, "outputs": list(it.outputs),
                        "result": rec.get("result", {}), "rank": rec.get("rank"), "seconds": rec.get("seconds")})
    m = {"job": job, "complete": not missing, "items": entries, "missing": missing, "total": len(items)}
    write_json_atomic(Path(out_dir) / "manifest.json", m)
    return m


def run_worklist(items: list[WorkItem], do, out_dir, job: dict, rank: int = 0, world: int = 1,
                 desc: str = "batch", progress: bool = True) -> dict:
    """Run ``do(item) -> dict`` (JSON-able result; it must write ``item.outputs`` atomically) on this worker's
    incomplete items, then merge the manifest. Returns {'done': [keys], 'skipped': [keys], 'failed': {key: reason},
    'manifest': {...}}; raises NfkitError (one line) at the end when any item failed."""
    from nfkit import distributed
    from nfkit.progress import progress_bar

    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        raise NfkitError(f"{desc}: two inputs share the output name {sorted(k for k in keys if keys.count(k) > 1)[0]}")
    out_dir = Path(out_dir)
    (out_dir / RECORDS).mkdir(parents=True, exist_ok=True)
    mine = my_items(items, rank, world)
    skipped = [it.key for it in mine if read_record(out_dir, it) is not None]
    todo = [it for it in mine if it.key not in skipped]
    res = {"done": [], "skipped": skipped, "failed": {}}
    with progress_bar(total=len(todo), unit="item", desc=desc, disable=not progress) as bar:
        for it in todo:
            t0 = time.perf_counter()
            try:
                result = do(it)
            except NfkitError as e:
                res["failed"][it.key] = str(e)
                bar.update(1)
                continue
            rec = {"key": it.key, "result": result, "rank": rank, "seconds": round(time.perf_counter() - t0, 3)}
            write_json_atomic(record_path(out_dir, it.key), rec)
            res["done"].append(it.key)
            bar.update(1)
    if distributed.current() is not None:
        distributed.barrier()
    if distributed.is_main() or distributed.current() is None:
        res["manifest"] = merge_manifest(items, out_dir, job)
    if res["failed"]:
        key, why = next(iter(res["failed"].items()))
        raise NfkitError(f"{desc}: {len(res['failed'])} of {len(todo)} items failed (first: {key}: {why}); "
                         "run the same command again to retry them")
    return res


def field_files(folder) -> list[Path]:
    """The field files (``*.safetensors``) directly in ``folder``, sorted; NfkitError when there are none."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if not files:
        raise NfkitError(f"{folder}: no field files (*.safetensors) in this folder")
    return files
