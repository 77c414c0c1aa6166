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
import math
from pathlib import Path

import torch

from nfkit.atomic import atomic_path
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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"nfkit": json.dumps(meta)})
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
    else:
        lo, hi = aabb
        if not all(math.isfinite(v) for v in lo + hi):
            problems.append(f"'aabb' {aabb} is not finite")
        elif not all(a < b for a, b in zip(lo, hi)):
            problems.append(f"'aabb' {aabb} is inverted or flat (min must be < max on every axis)")
    if "normalization" in meta:
        problems += _normalization_problems(meta["normalization"])
    if problems:
        raise FieldFileError(f"{path}: corrupt nfkit metadata ({'; '.join(problems)})")
    return meta


def _normalization_problems(norm) -> list[str]:
    """'normalization' must be {transform: finite invertible 4x4, scale: finite > 0}."""
    if not isinstance(norm, dict):
        return ["'normalization' must be an object"]
    t, scale = norm.get("transform"), norm.get("scale", 1.0)
    if not (isinstance(t, list) and len(t) == 4 and all(isinstance(r, list) and len(r) == 4 and
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r) for r in t)):
        return ["'normalization.transform' must be a 4x4 matrix of numbers"]
    if not all(math.isfinite(v) for r in t for v in r):
        return ["'normalization.transform' is not finite"]
    m = torch.tensor(t, dtype=torch.float64)
    for a in (m[:3, :3], m):  # the linear part and the whole matrix (export inverts it)
        sv = torch.linalg.svdvals(a)
        if not sv[-1] > 1e-9 * max(float(sv[0]), 1e-300):
            return ["'normalization.transform' is singular (not invertible)"]
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0):
        return [f"'normalization.scale' {scale!r} must be a finite number > 0"]
    return []


def _one_line(e: Exception, n: int = 160) -> str:
    return " ".join(str(e).split())[:n]


# safetensors' dtype names of the torch dtypes a field file may hold.
_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}
# The model a file's config builds may hold, besides the file's own tensors, this many bytes of buffers that are
# not saved (e.g. level tables): a config asking for more is refused before anything is allocated.
UNSAVED_BYTES_LIMIT = 256 << 20
OCCGRID_MAX_RES = 1024


def _build(path: Path, meta: dict) -> Field:
    """The field (with its background model) from the header, on the current default device."""
    try:
        field = build_field(meta["family"], meta.get("config", {}), torch.tensor(meta["aabb"], dtype=torch.float32))
    except FieldFileError as e:
        raise FieldFileError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001  (any value a crafted config holds: TypeError, ValueError, Overflow...)
        raise FieldFileError(f"{path}: config does not build a {meta['family']} field ({_one_line(e)})") from None
    bg = meta.get("background")
    if bg is not None:
        if not (isinstance(bg, dict) and isinstance(bg.get("kind"), str) and isinstance(bg.get("config", {}), dict)):
            raise FieldFileError(f"{path}: corrupt nfkit metadata ('background' must be {{kind, config}})")
        try:
            attach_background(field, build_background(bg["kind"], bg.get("config", {})))
        except FieldFileError as e:
            raise FieldFileError(f"{path}: {e}") from None
        except Exception as e:  # noqa: BLE001
            raise FieldFileError(f"{path}: background config does not build ({_one_line(e)})") from None
    return field


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _check_tensor_table(path: Path, meta: dict, model: Field) -> None:
    """Every ``field.*`` tensor in the file's table has the shape and dtype of the (meta-device) model's, none is
    missing or extra, and the model needs no more memory than the file holds (+ :data:`UNSAVED_BYTES_LIMIT`)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            table = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise FieldFileError(f"{path}: truncated or corrupt field file ({_one_line(e, 120)})") from None
    expected = {f"field.{k}": (tuple(v.shape), _ST_DTYPES.get(v.dtype, str(v.dtype)))
                for k, v in model.state_dict().items()}
    stored = {k: v for k, v in table.items() if k.startswith("field.")}
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise FieldFileError(f"{path}: tensors do not match the {meta['family']} config ({what})")
    for k, (shape, dtype) in expected.items():
        if stored[k] != (shape, dtype):
            raise FieldFileError(f"{path}: tensor {k} is {list(stored[k][0])} {stored[k][1]}, the "
                                 f"{meta['family']} config needs {list(shape)} {dtype}")
    saved = sum(_nbytes(v) for v in model.state_dict().values())
    total = sum(_nbytes(p) for p in model.parameters()) + sum(_nbytes(b) for b in model.buffers())
    if total - saved > UNSAVED_BYTES_LIMIT:
        raise FieldFileError(f"{path}: the {meta['family']} config needs {total / 2**30:.1f} GiB beyond the "
                             "file's tensors; refusing to build it")


def _check_occupancy_grid(path: Path, tensors: dict) -> None:
    """``occgrid.{density, binary}`` (and ``.aabb``), when present: a finite ordered [2, 3] box and R^3 cells
    (1 <= R <= :data:`OCCGRID_MAX_RES`), density float and binary bool."""
    grid = {k[len("occgrid."):]: v for k, v in tensors.items() if k.startswith("occgrid.")}
    if not grid:
        return
    if not {"density", "binary"} <= set(grid) <= {"aabb", "density", "binary"}:
        raise FieldFileError(f"{path}: occupancy grid must hold occgrid.density and .binary (and .aabb), got "
                             f"{sorted(grid)}")
    n = grid["density"].numel()
    r = round(n ** (1 / 3)) if n > 0 else 0
    box = grid.get("aabb", torch.tensor([[0.0] * 3, [1.0] * 3]))
    if not (1 <= r <= OCCGRID_MAX_RES and r**3 == n and grid["density"].is_floating_point() and
            grid["binary"].dtype == torch.bool and grid["binary"].numel() == n):
        raise FieldFileError(f"{path}: occupancy grid must be R^3 cells (1 <= R <= {OCCGRID_MAX_RES}) of float "
                             f"density and bool occupancy, got {n} density / {grid['binary'].numel()} "
                             f"{grid['binary'].dtype} occupancy values")
    if not (box.shape == (2, 3) and box.is_floating_point() and bool(torch.isfinite(box).all())
            and bool((box[0] < box[1]).all())):
        raise FieldFileError(f"{path}: occupancy grid box occgrid.aabb must be a finite [2, 3] with min < max")


def _probe(path: Path, meta: dict, field: Field) -> None:
    """A 3-D renderable field must evaluate at its centre: a config the fast paths refuse (e.g. a hash grid with 3
    features a level, which the C++ kernel does not take) is a one-line error here, not a traceback mid-render."""
    if field.kind not in ("density", "sdf"):
        return
    x = field.aabb.detach().float().mean(0, keepdim=True).cpu()
    try:
        with torch.no_grad():
            field.eval()
            field.sdf(x) if field.kind == "sdf" else field.density(x)
    except Exception as e:  # noqa: BLE001  (whatever a crafted config makes the field raise)
        raise FieldFileError(f"{path}: the {meta['family']} field does not evaluate ({_one_line(e)})") from None


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
    with torch.device("meta"):  # no memory yet: a crafted config cannot allocate before its shapes are checked
        model = _build(path, meta)
    _check_tensor_table(path, meta, model)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise FieldFileError(f"{path}: truncated or corrupt field file ({str(e)[:120]})") from None
    bad = [k for k, v in tensors.items() if k.startswith("field.") and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise FieldFileError(f"{path}: non-finite values (NaN or inf) in {len(bad)} tensor(s), e.g. {bad[0]}")
    _check_occupancy_grid(path, tensors)
    field = _build(path, meta)
    state = {k[len("field."):]: v for k, v in tensors.items() if k.startswith("field.")}
    try:
        field.load_state_dict(state)
    except RuntimeError as e:
        raise FieldFileError(f"{path}: tensors do not match the {meta['family']} config ({_one_line(e)})") from None
    _probe(path, meta, field)
    field.to(device).eval()
    if return_extras:
        return field, meta, {k: v.to(device) for k, v in tensors.items() if not k.startswith("field.")}
    return field
