"""A shared decoder for a whole bank (``FitConfig.decoder == 'shared'``): ``BANK/decoder.safetensors``.

The decoder is fitted once, jointly with the planes of ``shared_fit_shapes`` training shapes spread evenly over
the bank's order (so over the classes), in one batched computation (:func:`~nfkit.apps.triplanes.bank.fit_batch`
with a trainable decoder broadcast over the shapes); their planes are dropped. Every shard then fits only its
shapes' planes against the frozen decoder, so shards stay independent: they resume, split across workers, and a
new shape (``nfkit triplanes classify``) is fitted against the same decoder, which the classifier file carries.

The file is safetensors (``w{i}`` [1, d_in, d_out], ``b{i}`` [1, 1, d_out]) with the fit config as JSON metadata.
Several workers may reach a missing decoder at once: each fits it, and the first to finish creates the file
(a hard link from its temporary file, which fails when the name exists); every worker then reads that one file, so
all shards use the same decoder.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from nfkit.apps.triplanes.bank import FitConfig, decoder_shapes, fit_batch
from nfkit.atomic import fsync_path, temp_name
from nfkit.errors import DatasetError

FORMAT = "nfkit-triplane-shared-decoder"
FILE = "decoder.safetensors"


def decoder_shape_indices(splits, n: int) -> list:
    """Bank positions of the (at most) ``n`` training shapes the decoder is fitted on, evenly spread over the
    bank's order (all shapes when the bank has no training split)."""
    pool = [i for i, s in enumerate(splits) if s == "train"] or list(range(len(splits)))
    if len(pool) <= n:
        return pool
    return sorted({pool[int(round(k * (len(pool) - 1) / max(n - 1, 1)))] for k in range(n)})


def fit_shared_decoder(files, indices, cfg: FitConfig, seeds) -> dict:
    """Fit a decoder jointly with the planes of ``files`` (bank positions ``indices``, sampling seeds ``seeds``).
    Returns its tensors ([1, ...] each)."""
    from nfkit.apps.triplanes.targets import file_targets

    pts, target, _ = file_targets(files, cfg, seeds)
    params, _ = fit_batch(pts, target, [cfg.init_seed(i) for i in indices], seeds, cfg)
    return {k: params[k] for k in decoder_shapes(cfg)}


def save_decoder(path, tensors: dict, cfg: FitConfig) -> bool:
    """Create ``path`` unless it exists (first writer wins, never a half-written file). Returns whether this call
    created it."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = temp_name(path)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": FORMAT, "fit_config": json.dumps(asdict(cfg))})
        fsync_path(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_path(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def load_decoder(path, cfg: FitConfig) -> dict:
    """A bank's shared decoder; a missing, unreadable or mismatched file is a one-line error."""
    from nfkit.tensor_files import read_tensor_file

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: missing (the bank's shared decoder; run nfkit triplanes fit again)")
    tensors, _ = read_tensor_file(path, FORMAT, "shared decoder", "nfkit triplanes fit --decoder shared")
    want = {k: (1, *s) for k, s in decoder_shapes(cfg).items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != want:
        raise DatasetError(f"{path}: not a shared decoder of this bank's settings (tensors {got}, expected {want})")
    return tensors


def ensure_decoder(out: Path, files, splits, cfg: FitConfig, seeds) -> tuple[dict, float]:
    """The bank's shared decoder, fitted first when ``out/decoder.safetensors`` is missing. ``files``, ``splits``,
    ``seeds``: every shape of the bank. Returns (tensors, seconds spent fitting)."""
    import time

    path = Path(out) / FILE
    t0 = time.perf_counter()
    if not path.is_file():
        idx = decoder_shape_indices(splits, cfg.shared_fit_shapes)
        save_decoder(path, fit_shared_decoder([files[i] for i in idx], idx, cfg, [seeds[i] for i in idx]), cfg)
    return load_decoder(path, cfg), time.perf_counter() - t0
