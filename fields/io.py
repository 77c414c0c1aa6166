"""Field files: one self-describing safetensors file per field.

Tensors: the field's ``state_dict`` under ``field.*`` plus optional extra tensors (e.g. the occupancy grid
under ``occgrid.*``). Metadata key ``nfkit`` holds JSON: ``format`` ("nfkit-field"), ``format_version``,
``family``, ``config``, ``aabb``, ``normalization`` (``transform`` 4x4 input->normalised, ``scale``) and
free-form ``info``, and ``background`` (``{"kind", "config"}``) when the field has a background model
(:mod:`nfkit.fields.background`; its tensors are ``field.background_model.*``). Loading never unpickles.
Writes go to a temporary name, then an atomic rename. Saving copies CUDA tensors to the CPU (safetensors' need).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from nfkit.errors import FieldFileError
from nfkit.fields.background import attach_background, background_header, build_background
from nfkit.fields.base import Field, build_field

FORMAT = "nfkit-field"
FORMAT_VERSION = 1


def save(field: Field, path, normalization: dict | None = None, info: dict | None = None,
         extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"field.{k}": v.detach().cpu().contiguous() for k, v in field.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "family": field.family, "kind": field.kind,
        "config": field.config_dict(), "aabb": field.aabb.tolist(),
        "normalization": normalization or {"transform": torch.eye(4).tolist(), "scale": 1.0},
        "info": info or {},
    }
    bg = background_header(field)
    if bg is not None:
        meta["background"] = bg
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"nfkit": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def read_header(path) -> dict:
    """The JSON metadata of a field file (checked), without loading tensors."""
    path = Path(path)
    if not path.is_file():
        raise FieldFileError(f"{path}: no such field file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("nfkit")
    except Exception as e:
        raise FieldFileError(f"{path}: not a field file (unreadable or truncated safetensors: {str(e)[:120]})") from None
    if raw is None:
        raise FieldFileError(f"{path}: not an nfkit field file (safetensors without 'nfkit' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise FieldFileError(f"{path}: corrupt nfkit metadata (invalid JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise FieldFileError(f"{path}: not an nfkit field file (format {fmt!r})")
    ver = meta.get("format_version")
    if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
        raise FieldFileError(f"{path}: corrupt nfkit metadata (format_version {ver!r} is not a positive integer)")
    if ver > FORMAT_VERSION:
        raise FieldFileError(
            f"{path}: field file format version {ver} is newer than this nfkit supports ({FORMAT_VERSION}); upgrade nfkit")
    problems = []
    if not isinstance(meta.get("family"), str):
        problems.append("'family' must be a string")
    if not isinstance(meta.get("config", {}), dict):
        problems.append("'config' must be an object")
    aabb = meta.get("aabb")
    if not (isinstance(aabb, list) and len(aabb) == 2 and all(isinstance(r, list) and len(r) == 3 and
            all(isinstance(v, (int, float)) for v in r) for r in aabb)):
        problems.append("'aabb' must be [[3 numbers], [3 numbers]]")
    if problems:
        raise FieldFileError(f"{path}: corrupt nfkit metadata ({'; '.join(problems)})")
    return meta


def _one_line(e: Exception, n: int = 160) -> str:
    return " ".join(str(e).split())[:n]


def load(path, device: str | torch.device = "cpu", return_extras: bool = False):
    """Rebuild a field from its file alone. Returns the field (eval mode), or (field, meta, extra_tensors).

    ``device``: "cpu" (default), "cuda[:N]" or "auto" (:func:`nfkit.device.resolve_device`); the field and the
    extra tensors (e.g. ``occgrid.*``) are returned there. Files are device-independent (tensors stored from the CPU).
    """
    from safetensors.torch import load_file

    from nfkit.device import resolve_device

    path = Path(path)
    device = resolve_device(device)
    meta = read_header(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise FieldFileError(f"{path}: truncated or corrupt field file ({str(e)[:120]})") from None
    try:
        field = build_field(meta["family"], meta.get("config", {}), torch.tensor(meta["aabb"], dtype=torch.float32))
    except FieldFileError as e:
        raise FieldFileError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise FieldFileError(f"{path}: config does not build a {meta['family']} field ({_one_line(e)})") from None
    bg = meta.get("background")
    if bg is not None:
        if not (isinstance(bg, dict) and isinstance(bg.get("kind"), str) and isinstance(bg.get("config", {}), dict)):
            raise FieldFileError(f"{path}: corrupt nfkit metadata ('background' must be {{kind, config}})")
        try:
            attach_background(field, build_background(bg["kind"], bg.get("config", {})))
        except FieldFileError as e:
            raise FieldFileError(f"{path}: {e}") from None
    state = {k[len("field."):]: v for k, v in tensors.items() if k.startswith("field.")}
    try:
        field.load_state_dict(state)
    except RuntimeError as e:
        raise FieldFileError(f"{path}: tensors do not match the {meta['family']} config ({_one_line(e)})") from None
    field.to(device).eval()
    if return_extras:
        return field, meta, {k: v.to(device) for k, v in tensors.items() if not k.startswith("field.")}
    return field
