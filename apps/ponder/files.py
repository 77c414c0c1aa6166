"""Encoder files: one safetensors file (the whole :class:`~.render.PonderModel` state: encoder + decoders) whose
metadata holds the format, the encoder / render / pretraining configs and the run's log (JSON). No pickle."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from nfkit.errors import FieldFileError, NfkitError

from .encoder import EncoderConfig
from .render import PonderModel, RenderConfig

FORMAT, VERSION = "nfkit-ponder-encoder", 1


def _tuples(d: dict) -> dict:
    return {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
            for k, v in d.items()}


def save_model(path, model: PonderModel, info: dict) -> Path:
    from safetensors.torch import save_file

    from nfkit.atomic import atomic_path

    path = Path(path)
    if path.is_dir():
        raise NfkitError(f"--out {path}: is a folder; expected a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": str(VERSION), "encoder": json.dumps(asdict(model.enc_cfg)),
            "render": json.dumps(asdict(model.cfg)), "info": json.dumps(info)}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_model(path) -> tuple[PonderModel, dict]:
    """(model, info) from an encoder file; one-line errors for missing, truncated or foreign files."""
    from nfkit.tensor_files import read_tensor_file

    state, meta = read_tensor_file(path, FORMAT, "nfkit ponder encoder file", "nfkit ponder pretrain")
    if int(meta.get("version", 0)) > VERSION:
        raise FieldFileError(f"{path}: format version {meta['version']} is newer than this nfkit's {VERSION}")
    model = PonderModel(EncoderConfig(**_tuples(json.loads(meta["encoder"]))),
                        RenderConfig(**json.loads(meta["render"])))
    model.load_state_dict(state)
    return model, json.loads(meta.get("info", "{}"))
