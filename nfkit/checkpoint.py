"""Training checkpoints: the field file plus the optimizer, loop and random state, safetensors + JSON, no pickle.

``DIR/checkpoint/field.safetensors`` is a regular field file (with the occupancy grid when there is one);
``DIR/checkpoint/state.safetensors`` holds Adam's moments and the random generators' states as tensors, with JSON
metadata (loop state: step, elapsed seconds, rays per batch, ...), and the tensors of the objective's other
trained modules (``module.<name>.<key>``: e.g. NEAT's attraction head and junction latents). Both carry the same
checkpoint id (``step-random``), and :func:`load_checkpoint` refuses a pair whose ids differ.

One atomic unit: both files are written into a fresh ``DIR/checkpoint.new``, fsynced with their folder, then swapped
in by renames: ``checkpoint`` -> ``checkpoint.old``, ``checkpoint.new`` -> ``checkpoint``, remove the old one. A kill
at any moment leaves a complete ``checkpoint`` (the previous or the new one), or -- between the two renames -- only
``checkpoint.old``, which loading and the next save take as the checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from nfkit import fields
from nfkit.errors import NfkitError

FIELD_FILE, STATE_FILE = "field.safetensors", "state.safetensors"


def _fsync_path(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _siblings(ckpt_dir: Path) -> tuple[Path, Path]:
    return ckpt_dir.with_name(ckpt_dir.name + ".new"), ckpt_dir.with_name(ckpt_dir.name + ".old")


def current_checkpoint(ckpt_dir: Path) -> Path:
    """The folder holding the latest complete checkpoint: ``ckpt_dir``, or its ``.old`` sibling when a save was
    killed between its two renames."""
    ckpt_dir = Path(ckpt_dir)
    old = _siblings(ckpt_dir)[1]
    if not ckpt_dir.exists() and (old / STATE_FILE).is_file():
        return old
    return ckpt_dir


def rng_tensors(generators: dict[str, torch.Generator] | None = None) -> dict[str, torch.Tensor]:
    """States of torch's CPU generator, the CUDA generators (when CUDA is initialised) and ``generators``."""
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    out.update({f"rng.gen.{k}": g.get_state() for k, g in (generators or {}).items()})
    return out


def restore_rng(tensors: dict[str, torch.Tensor], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`rng_tensors` (states missing from ``tensors`` are left alone)."""
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k[9:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    for k, g in (generators or {}).items():
        if f"rng.gen.{k}" in tensors:
            g.set_state(tensors[f"rng.gen.{k}"])


def module_tensors(modules: dict[str, torch.nn.Module] | None) -> dict[str, torch.Tensor]:
    """name -> module  ->  {``module.<name>.<key>``: tensor} (the modules' state dicts, CPU, contiguous)."""
    return {f"module.{n}.{k}": v.detach().cpu().contiguous()
            for n, m in (modules or {}).items() for k, v in m.state_dict().items()}


def restore_modules(tensors: dict[str, torch.Tensor], modules: dict[str, torch.nn.Module] | None, where) -> None:
    """Inverse of :func:`module_tensors`, strict: NfkitError naming ``where`` when a module's tensors are missing
    or do not fit (a checkpoint of other options)."""
    for n, m in (modules or {}).items():
        pre = f"module.{n}."
        st = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
        try:
            m.load_state_dict(st)
        except RuntimeError as e:
            raise NfkitError(f"{where}: the checkpoint's {n} does not fit this run ({str(e).splitlines()[0][:100]}); "
                             "resume with the same options, or use a new --out") from None


def save_checkpoint(ckpt_dir: Path, field, grid, optimizer: torch.optim.Optimizer, loop_state: dict,
                    normalization: dict | None, generators: dict[str, torch.Generator] | None = None,
                    modules: dict[str, torch.nn.Module] | None = None) -> None:
    """Write the checkpoint as one unit (module docstring). ``grid``: an occupancy grid or None; ``modules``: the
    objective's other trained modules (name -> module)."""
    from safetensors.torch import save_file

    ckpt_dir = Path(ckpt_dir)
    new, old = _siblings(ckpt_dir)
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    if not ckpt_dir.exists() and old.exists():  # an earlier save was killed between its renames: old is current
        os.rename(old, ckpt_dir)
    if new.exists():  # an earlier save was killed while writing
        shutil.rmtree(new)
    new.mkdir()
    ident = f"{loop_state['step']}-{uuid.uuid4().hex[:12]}"
    extras = {} if grid is None else {f"occgrid.{k}": v for k, v in grid.state_dict().items()}
    fields.save(field, new / FIELD_FILE, normalization=normalization, info={"checkpoint": ident},
                extra_tensors=extras)
    tensors = {k: v.contiguous() for k, v in rng_tensors(generators).items()}
    tensors.update(module_tensors(modules))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for k, v in optimizer.state.get(p, {}).items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
    meta = {"loop": loop_state, "checkpoint": ident,
            "groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]}
    save_file(tensors, str(new / STATE_FILE), metadata={"nfkit_state": json.dumps(meta)})
    for p in (new / FIELD_FILE, new / STATE_FILE, new):
        _fsync_path(p)
    if ckpt_dir.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(ckpt_dir, old)
    os.rename(new, ckpt_dir)
    _fsync_path(ckpt_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(ckpt_dir: Path, field, grid, optimizer: torch.optim.Optimizer,
                    generators: dict[str, torch.Generator] | None = None,
                    modules: dict[str, torch.nn.Module] | None = None) -> dict:
    """Restore field, grid, ``modules``, optimizer and random state in place; returns the loop state. Raises
    NfkitError if the checkpoint is missing, unusable, or its two files are not from the same save."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    src = current_checkpoint(Path(ckpt_dir))
    state_path = src / STATE_FILE
    if not state_path.is_file():
        raise NfkitError(f"{ckpt_dir}: no checkpoint to resume from (expected {state_path.name})")
    try:
        with safe_open(str(state_path), framework="pt") as f:
            meta = json.loads(f.metadata()["nfkit_state"])
        tensors = load_file(str(state_path))
    except Exception as e:  # noqa: BLE001 -- any corruption of the file: one line
        raise NfkitError(f"{state_path}: unreadable checkpoint state ({' '.join(str(e).split())[:120]})") from None
    loaded, header, extras = fields.load(src / FIELD_FILE, return_extras=True)
    if meta.get("checkpoint") != header.get("info", {}).get("checkpoint"):
        raise NfkitError(f"{ckpt_dir}: {FIELD_FILE} and {STATE_FILE} are from different checkpoints; "
                         "start again without --resume or use a new --out")
    if loaded.family != field.family or loaded.config_dict() != field.config_dict():
        raise NfkitError(f"{ckpt_dir}: checkpoint is a {loaded.family} field with another config; "
                         "resume with the same --field and options, or use a new --out")
    field.load_state_dict(loaded.state_dict())
    if grid is not None:
        grid.load_state_dict({k[len("occgrid."):]: v for k, v in extras.items() if k.startswith("occgrid.")})
    restore_modules(tensors, modules, ckpt_dir)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        st = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if st:  # Adam's moments on the parameter's device; "step" stays on the CPU unless fused/capturable wants it there
            group = next(g for g in optimizer.param_groups if any(q is p for q in g["params"]))
            on_param = group.get("fused") or group.get("capturable")
            optimizer.state[p] = {k: v.to(p.device) if (k != "step" or on_param) else v for k, v in st.items()}
    for g, saved in zip(optimizer.param_groups, meta["groups"]):
        g.update({k: v for k, v in saved.items() if k in g})
    restore_rng(tensors, generators)
    return meta["loop"]
