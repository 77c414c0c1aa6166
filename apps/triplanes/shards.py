"""A fitted dataset on disk: ``BANK/bank.json`` + a few safetensors shards, resumable and split across workers.

* ``bank.json``: format, the :class:`~nfkit.apps.triplanes.bank.FitConfig`, shard size, classes and every shape
  (file, label, split) in bank order; written once (atomically) and checked by every later run: a run with other
  settings or other shapes is refused (one line) rather than mixing fields.
* ``shard-KKKKK-of-NNNNN.safetensors``: shapes [K * shard_size, (K+1) * shard_size): ``planes`` [n, 3, C, R, R],
  decoder ``w{i}`` [n, d_in, d_out] / ``b{i}`` [n, 1, d_out], ``points`` [n, M, 3] (surface samples), ``labels``
  [n], ``index`` [n] (bank order), ``loss`` [n]; its metadata holds the fit config (JSON) and its file list.
  A shard is written to a temporary name and renamed when complete (:mod:`nfkit.atomic`), so a file with the final
  name is a finished shard: a rerun after an interruption fits only the missing ones.
* ``decoder.safetensors`` (``decoder="shared"`` only): the bank's one decoder, fitted before the first shard and
  frozen; the shards then hold planes but no decoder tensors (:mod:`~nfkit.apps.triplanes.shared_decoder`).
* Work split: worker ``rank`` of ``world_size`` fits shards ``rank, rank + world_size, ...`` (defaults from the
  ``RANK`` / ``WORLD_SIZE`` environment of torchrun), so several processes can fit one dataset.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nfkit.apps.triplanes.bank import FitConfig, decoder_shapes, fit_batch
from nfkit.apps.triplanes.dataset import ShapeList, hash_str, list_shapes
from nfkit.apps.triplanes.shared_decoder import FILE as DECODER_FILE
from nfkit.apps.triplanes.shared_decoder import ensure_decoder, load_decoder
from nfkit.apps.triplanes.targets import resolve_target
from nfkit.atomic import atomic_path, write_json_atomic
from nfkit.errors import DatasetError, NfkitError

FORMAT = "nfkit-triplane-bank"
VERSION = 1


def shard_name(k: int, n: int) -> str:
    return f"shard-{k:05d}-of-{n:05d}.safetensors"


def order_seed(file: str) -> int:
    """The seed of one shape's ground-truth samples and minibatch order: fixed by the file's last three path parts
    (class/split/name), not by the fit's seed."""
    return hash_str("/".join(Path(file).parts[-3:])) ^ 0x5EED


def load_targets(files, cfg: FitConfig):
    """Ground truth of several shape files (``cfg.target`` resolved): (points [B, N, 3], label [B, N], surface
    [B, M, 3]); each file's samples are seeded by :func:`order_seed`."""
    from nfkit.apps.triplanes.targets import file_targets

    return file_targets(files, cfg, [order_seed(f) for f in files])


def fit_files(files, indices, cfg: FitConfig, batch_shapes: int, on_batch=None, decoder: dict | None = None):
    """Fit the shapes of ``files`` (bank positions ``indices``) in batches of ``batch_shapes`` (against the frozen
    shared ``decoder`` when given). Returns the shard's tensors and {'sample_seconds', 'fit_seconds'}."""
    parts, times = [], {"sample_seconds": 0.0, "fit_seconds": 0.0}
    for s in range(0, len(files), batch_shapes):
        fb, ib = files[s: s + batch_shapes], indices[s: s + batch_shapes]
        t0 = time.perf_counter()
        pts, occ, surf = load_targets(fb, cfg)
        times["sample_seconds"] += time.perf_counter() - t0
        params, stats = fit_batch(pts, occ, [cfg.init_seed(i) for i in ib], [order_seed(f) for f in fb], cfg,
                                  decoder=decoder)
        if decoder is not None:  # stored once, in the bank's decoder file
            params = {"planes": params["planes"]}
        times["fit_seconds"] += stats["seconds"]
        parts.append({**params, "points": surf, "loss": stats["loss"]})
        if on_batch is not None:
            on_batch(len(fb))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}, times


def manifest(shapes: ShapeList, root, cfg: FitConfig, shard_size: int) -> dict:
    """The bank's manifest; shape files relative to ``root`` (recorded as ``root``, not compared on reruns)."""
    n = -(-len(shapes) // shard_size)
    listing = shapes.as_json()
    for s in listing["shapes"]:
        s["file"] = Path(s["file"]).relative_to(root).as_posix()
    return {"format": FORMAT, "version": VERSION, "fit_config": asdict(cfg), "shard_size": shard_size,
            "shards": [shard_name(k, n) for k in range(n)], **listing, "root": str(root)}


def check_or_write_manifest(out: Path, m: dict) -> None:
    path = out / "bank.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"{path}: unreadable bank manifest ({e})") from None
        diff = [k for k in m if k != "root" and old.get(k) != json.loads(json.dumps(m[k]))]
        if diff:
            raise NfkitError(f"{out}: holds a bank fitted with other settings or shapes ({', '.join(diff)} differ);"
                             " use another --out or the same options")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, m)


def save_shard(path: Path, tensors: dict, labels, indices, files, cfg: FitConfig) -> None:
    from safetensors.torch import save_file

    tensors = {**{k: v.contiguous() for k, v in tensors.items()}, "labels": torch.tensor(labels, dtype=torch.int64),
               "index": torch.tensor(indices, dtype=torch.int64)}
    meta = {"format": FORMAT, "fit_config": json.dumps(asdict(cfg)), "files": json.dumps(files)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def fit_bank(root, out, cfg: FitConfig, shard_size: int = 128, batch_shapes: int = 64, split: str = "all",
             rank: int = 0, world_size: int = 1, progress: bool = True, max_shards: int = 0) -> dict:
    """Fit every shape of the folder ``root`` into the bank ``out`` (this worker's missing shards only; at most
    ``max_shards`` of them when > 0). Returns {'fitted': [k], 'skipped': [k], 'shapes', 'seconds',
    'sample_seconds', 'fit_seconds', 'decoder_seconds' (fitting or reading a shared decoder), 'missing': [k]
    (shards of any worker still to fit)}."""
    from nfkit.progress import progress_bar

    cfg.check()
    if shard_size < 1 or batch_shapes < 1:
        raise NfkitError("--shard-size and --batch-shapes must be positive")
    if not 0 <= rank < world_size:
        raise NfkitError(f"--rank {rank}: expected 0 <= rank < --world-size ({world_size})")
    shapes = list_shapes(root, split)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NfkitError(f"--out {out}: is a file; expected a bank folder")
    cfg = resolve_target(cfg, shapes.files)
    m = manifest(shapes, Path(root), cfg, shard_size)
    check_or_write_manifest(out, m)
    mine = [k for k in range(len(m["shards"])) if k % world_size == rank]
    done = [k for k in mine if (out / m["shards"][k]).is_file()]
    todo = [k for k in mine if k not in done]
    if max_shards > 0:
        todo = todo[:max_shards]
    n_todo = sum(len(shapes.files[k * shard_size: (k + 1) * shard_size]) for k in todo)
    res = {"fitted": [], "skipped": done, "shapes": 0, "sample_seconds": 0.0, "fit_seconds": 0.0,
           "decoder_seconds": 0.0}
    decoder = None
    if cfg.decoder == "shared" and todo:
        if progress:
            print(f"triplanes fit: the shared decoder ({out / DECODER_FILE})", file=sys.stderr, flush=True)
        decoder, res["decoder_seconds"] = ensure_decoder(out, shapes.files, shapes.splits, cfg,
                                                         [order_seed(f) for f in shapes.files])
    bar = progress_bar(total=n_todo, unit="shape", desc="triplanes fit", disable=not progress)
    t0 = time.perf_counter()

    def on_batch(n):
        bar.update(n)
        rate = bar.n / max(time.perf_counter() - t0, 1e-9) * 60
        bar.set_postfix_str(f"{rate:.0f} shapes/min", refresh=False)

    try:
        for k in todo:
            sl = slice(k * shard_size, (k + 1) * shard_size)
            files, idx = shapes.files[sl], list(range(len(shapes)))[sl]
            tensors, times = fit_files(files, idx, cfg, batch_shapes, on_batch, decoder)
            save_shard(out / m["shards"][k], tensors, shapes.labels[sl], idx, files, cfg)
            res["fitted"].append(k)
            res["shapes"] += len(files)
            res["sample_seconds"] += times["sample_seconds"]
            res["fit_seconds"] += times["fit_seconds"]
    finally:
        bar.close()
    res["seconds"] = time.perf_counter() - t0 + res["decoder_seconds"]  # end to end, the shared decoder's fit too
    res["missing"] = [k for k, name in enumerate(m["shards"]) if not (out / name).is_file()]
    return res


@dataclass
class Bank:
    """A loaded bank: tensors in bank order (``planes`` [N, 3, C, R, R], decoder ``w{i}``/``b{i}`` [N, ...] unless
    shared, ``points`` [N, M, 3], ``labels`` [N], ``loss`` [N]), ``splits`` [N] ('train' / 'test'), ``classes``,
    ``files``, config, and a shared decoder's tensors ([1, ...] each; None with per-shape decoders)."""

    tensors: dict
    splits: list
    classes: list
    files: list
    config: FitConfig
    decoder: dict | None = None

    def select(self, split: str) -> dict:
        """The tensors of one split (all when ``split`` is 'all')."""
        keep = torch.tensor([split in ("all", s) for s in self.splits])
        return {k: v[keep] for k, v in self.tensors.items()}

    def params(self, tensors: dict | None = None) -> dict:
        """The field tensors (planes and decoder) of ``tensors`` (default: all shapes)."""
        t = self.tensors if tensors is None else tensors
        if self.decoder is not None:
            return {"planes": t["planes"], **self.decoder}
        return {k: t[k] for k in ("planes", *decoder_shapes(self.config))}


def load_bank(path) -> Bank:
    """Read a complete bank folder; a missing or unreadable shard is a one-line error."""
    from safetensors.torch import load_file

    path = Path(path)
    mpath = path / "bank.json"
    try:
        m = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: not a tri-plane bank (no bank.json; make one with nfkit triplanes fit)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{mpath}: unreadable ({e})") from None
    if m.get("format") != FORMAT:
        raise DatasetError(f"{mpath}: not a tri-plane bank manifest")
    missing = [s for s in m["shards"] if not (path / s).is_file()]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} of {len(m['shards'])} shards not fitted yet ({missing[0]} ...);"
                           " run nfkit triplanes fit again to finish them")
    parts = []
    for s in m["shards"]:
        try:
            parts.append(load_file(str(path / s)))
        except Exception as e:  # safetensors raises its own error types for truncated files
            raise DatasetError(f"{path / s}: unreadable shard ({str(e)[:100]})") from None
    tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    order = torch.argsort(tensors.pop("index"))
    tensors = {k: v[order] for k, v in tensors.items()}
    shapes, cfg = m["shapes"], FitConfig(**m["fit_config"])
    decoder = load_decoder(path / DECODER_FILE, cfg) if cfg.decoder == "shared" else None
    return Bank(tensors, [s["split"] for s in shapes], m["classes"], [str(Path(m["root"]) / s["file"]) for s in shapes],
                cfg, decoder)
