"""Training checkpoints: the field file plus the optimizer and loop state, safetensors + JSON, no pickle.

``DIR/checkpoint/field.safetensors`` is a regular field file (with the occupancy grid); ``DIR/checkpoint/state.safetensors``
holds Adam's moments with JSON metadata (step, elapsed seconds, rays per batch). Both are written to temporary
names and renamed, the state last, so a checkpoint is either complete or absent.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from nfkit import fields
from nfkit.errors import NfkitError


def save_checkpoint(ckpt_dir: Path, field, grid, optimizer: torch.optim.Optimizer, loop_state: dict,
                    normalization: dict) -> None:
    from safetensors.torch import save_file

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fields.save(field, ckpt_dir / "field.safetensors", normalization=normalization,
                extra_tensors={f"occgrid.{k}": v for k, v in grid.state_dict().items()})
    tensors, meta = {}, {"loop": loop_state, "groups": []}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        st = optimizer.state.get(p, {})
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous().reshape(v.shape)
    meta["groups"] = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    tmp = ckpt_dir / "state.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"nfkit_state": json.dumps(meta)})
    os.replace(tmp, ckpt_dir / "state.safetensors")


def load_checkpoint(ckpt_dir: Path, field, grid, optimizer: torch.optim.Optimizer) -> dict:
    """Restore in place; returns the loop state. Raises NfkitError if the checkpoint is missing or unusable."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    state_path = ckpt_dir / "state.safetensors"
    if not state_path.is_file():
        raise NfkitError(f"{ckpt_dir}: no checkpoint to resume from (expected {state_path.name})")
    loaded, meta_hdr, extras = fields.load(ckpt_dir / "field.safetensors", return_extras=True)
    if loaded.family != field.family or loaded.config_dict() != field.config_dict():
        raise NfkitError(f"{ckpt_dir}: checkpoint is a {loaded.family} field with another config; "
                         "resume with the same --field and options, or use a new --out")
    field.load_state_dict(loaded.state_dict())
    grid.load_state_dict({k[len("occgrid."):]: v for k, v in extras.items() if k.startswith("occgrid.")})
    with safe_open(str(state_path), framework="pt") as f:
        meta = json.loads(f.metadata()["nfkit_state"])
    tensors = load_file(str(state_path))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        st = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"opt.{i}.")}
        if st:  # Adam's moments on the parameter's device; "step" stays on the CPU unless fused/capturable wants it there
            group = next(g for g in optimizer.param_groups if any(q is p for q in g["params"]))
            on_param = group.get("fused") or group.get("capturable")
            optimizer.state[p] = {k: v.to(p.device) if (k != "step" or on_param) else v for k, v in st.items()}
    for g, saved in zip(optimizer.param_groups, meta["groups"]):
        g.update({k: v for k, v in saved.items() if k in g})
    return meta["loop"]
