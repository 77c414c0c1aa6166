"""bfloat16 helpers shared by the fields and the renderers: whether the hardware multiplies bfloat16 natively, and
padding a batch to one of a few sizes (oneDNN builds a bfloat16 kernel per matrix shape, ~1 ms each, and ray batches
change size every step; see :mod:`nfkit.fields.coordnet`, "Precision")."""
from __future__ import annotations

import dataclasses
import functools

import torch


def fast_bfloat16(device: str | torch.device = "cpu") -> bool:
    """True when ``device`` multiplies bfloat16 natively (a CUDA GPU of compute capability >= 8, a CPU with
    AVX512-BF16 or AMX), so ``precision="bfloat16"`` speeds a network up instead of emulating it."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(dev)[0] >= 8
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


@functools.lru_cache(maxsize=None)
def cpu_bfloat16() -> bool:
    """:func:`fast_bfloat16` for the CPU, asked once."""
    return fast_bfloat16("cpu")


def bucket_rows(n: int) -> int:
    """``n`` rounded up to one of 8 sizes per octave (at most 1/8 more rows; 64 at least)."""
    n = max(n, 64)
    step = 1 << (n.bit_length() - 4)
    return -(-n // step) * step


def pad_rows(t, m: int):
    """Tensor [N, ...] (or a tuple of them, or None) zero-padded to m rows."""
    if t is None:
        return None
    if isinstance(t, tuple):
        return tuple(pad_rows(x, m) for x in t)
    return t if t.shape[0] == m else torch.cat([t, t.new_zeros(m - t.shape[0], *t.shape[1:])])


PRECISIONS = ("float32", "bfloat16", "auto")


def uses_bfloat16(precision: str, device: torch.device) -> bool:
    """Whether a network of ``precision`` runs in bfloat16 on ``device``: ``"bfloat16"``, or ``"auto"`` on a CPU with
    native bfloat16 (:func:`fast_bfloat16`; GPUs keep float32 under ``"auto"``, not measured yet)."""
    return precision == "bfloat16" or (precision == "auto" and device.type == "cpu" and cpu_bfloat16())


def call_padded(fn, *rows):
    """``fn(*rows)`` with the rows (tensors [N, ...], tuples of them or None) zero-padded to :func:`bucket_rows` (N)
    and every output (a tensor, a tuple of them or a dataclass of them) cut back to N rows."""
    n = rows[0].shape[0]
    return _cut(fn(*(pad_rows(r, bucket_rows(n)) for r in rows)), n)


def _cut(out, n: int):
    if out is None:
        return None
    if isinstance(out, tuple):
        return tuple(_cut(o, n) for o in out)
    if isinstance(out, dict):  # FieldOutput.channels
        return {k: _cut(v, n) for k, v in out.items()}
    if dataclasses.is_dataclass(out):
        return dataclasses.replace(out, **{f.name: _cut(getattr(out, f.name), n) for f in dataclasses.fields(out)})
    return out[:n]


def in_bfloat16(fn, *rows):
    """``fn(*rows)`` under bfloat16 autocast, as float32; on the CPU through :func:`call_padded` (oneDNN builds a
    bfloat16 kernel per matrix shape)."""
    dev = rows[0].device.type
    with torch.autocast(dev, dtype=torch.bfloat16):
        out = call_padded(fn, *rows) if dev == "cpu" else fn(*rows)
    return out.float()
