"""``nfkit wireframe`` end to end: data + 2-D lines -> NEAT training (the shared loop) -> extraction -> files.

Pieces are separate so the benchmark can train once and extract twice (with and without GJP).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nfkit import fields
from nfkit.datasets import load_dataset, unnormalize_points
from nfkit.errors import NfkitError
from nfkit.fields.sdf import NeuSField
from nfkit.loop import Loop, Schedule
from nfkit.renderers import OccupancyGrid, RenderOptions, default_step_size

from .config import DETECTORS, WireframeConfig
from .evaluate import evaluate_wireframe, read_gt
from .extract import Wireframe, extract_wireframe
from .lines2d import ViewLines, hawp_lines, lsd_lines
from .model import AttractionHead, JunctionDecoder
from .objective import WireframeObjective
from .outputs import write_wireframe


@dataclass
class NeatModel:
    field: NeuSField
    head: AttractionHead
    junctions: JunctionDecoder
    grid: OccupancyGrid
    opts: RenderOptions
    steps: int = 0
    seconds: float = 0.0


def data_root(path) -> Path:
    p = Path(path)
    return p if p.is_dir() else p.parent


def detect_lines(cfg: WireframeConfig, train, log=print) -> tuple[list[ViewLines], str]:
    """The 2-D lines of every training view at the loaded resolution -> (lines, source description)."""
    if cfg.detector not in DETECTORS:
        raise NfkitError(f"--detector {cfg.detector}: expected one of {', '.join(DETECTORS)}")
    h, w = train.images.shape[1:3]
    folder = Path(cfg.lines) if cfg.lines else data_root(cfg.data) / "hawp"
    if cfg.detector == "hawp" or (cfg.detector == "auto" and (cfg.lines or folder.is_dir())):
        if not folder.is_dir():
            raise NfkitError(f"--lines {folder}: not a folder of HAWP JSON files")
        return hawp_lines(folder, train.names, (h, w)), f"hawp:{folder}"
    from nfkit.images import read_image

    root = data_root(cfg.data)
    out = []
    for name in train.names:  # LSD at the files' full resolution, then scaled to the working one
        img = read_image(root / name).numpy()
        out.append(lsd_lines(img).scaled(w / img.shape[1]))
    log(f"nfkit wireframe: no line files; detected 2-D segments with LSD ({sum(map(len, out))} in {len(out)} views)")
    return out, "lsd"


def load_inputs(cfg: WireframeConfig, log=print):
    """-> (training SceneData, lines per view, lines source). NfkitError when no view has a segment."""
    train = load_dataset(cfg.data, split=cfg.split, max_side=cfg.max_side)
    if train.images.shape[-1] == 3 and cfg.dark_mask:
        from nfkit.datasets.masks import threshold_mask, with_alpha

        train.images = with_alpha(train.images, torch.stack([threshold_mask(im) for im in train.images]))
    lines, source = detect_lines(cfg, train, log)
    if sum(len(ln) for ln in lines) == 0:
        raise NfkitError(f"{cfg.data}: no 2-D line segments in any view ({source}); nothing to build a wireframe from")
    return train, lines, source


def build_model(train, cfg: WireframeConfig) -> NeatModel:
    fc = NeuSField.Config(backbone="mlp", renderer="volsdf", hidden=cfg.sdf_hidden, n_layers=cfg.sdf_layers,
                          n_freqs=cfg.sdf_freqs, net_lr_scale=1.0,
                          surface_lr_scale=cfg.beta_lr_scale)
    field = NeuSField(fc, train.aabb)
    head = AttractionHead(fc.geo_features, cfg.head_hidden, n_freqs=cfg.head_freqs)
    junctions = JunctionDecoder(cfg.n_junctions, cfg.junction_dim)
    grid = OccupancyGrid(train.aabb, cfg.grid_resolution)
    opts = RenderOptions(step_size=default_step_size(train.aabb, cfg.n_steps_per_ray))
    return NeatModel(field, head, junctions, grid, opts)


def train_model(train, lines, cfg: WireframeConfig, progress: bool = False, checkpoint_dir: Path | None = None,
                callback=None) -> NeatModel:
    """NEAT training on the shared loop. With ``checkpoint_dir``: checkpoints there (field + grid, attraction head,
    junction latents, Adam, random state) every ``cfg.checkpoint_seconds``, on Ctrl-C and at the end, and with
    ``cfg.resume`` continues from it. ``callback(loop)`` after each step (untimed)."""
    torch.manual_seed(cfg.seed)
    model = build_model(train, cfg)
    obj = WireframeObjective(model.field, model.head, model.junctions, model.grid, model.opts, train, lines, cfg)
    sched = Schedule(steps=cfg.steps, lr=cfg.lr, lr_final=cfg.lr_final, warmup=50,
                     checkpoint_seconds=cfg.checkpoint_seconds)
    loop = Loop(obj, sched, checkpoint_dir=checkpoint_dir, progress=progress)
    if cfg.resume:
        if checkpoint_dir is None:
            raise NfkitError("--resume: no checkpoint folder for this run")
        loop.resume()
    loop.run(callback=callback)
    model.steps, model.seconds = loop.step, loop.elapsed
    model.field.eval()
    return model


def to_input(train, wf: Wireframe) -> np.ndarray:
    """Junctions [J, 3] normalised -> input coordinates."""
    return unnormalize_points(torch.as_tensor(wf.junctions, dtype=torch.float64), train).numpy()


def save_field(model: NeatModel, train, path: Path, info: dict) -> None:
    extra = {f"occgrid.{k}": v for k, v in model.grid.state_dict().items()}
    extra.update({f"wireframe.head.{k}": v for k, v in model.head.state_dict().items()})
    extra.update({f"wireframe.junctions.{k}": v for k, v in model.junctions.state_dict().items()})
    fields.save(model.field, path, normalization={"transform": train.transform.tolist(), "scale": float(train.scale)},
                info=info, extra_tensors=extra)


def score(cfg: WireframeConfig, train, junctions_in: np.ndarray, edges: np.ndarray) -> dict | None:
    """ABC protocol against cfg.gt (or DATA/lines.json); None without a ground truth."""
    gt = Path(cfg.gt) if cfg.gt else data_root(cfg.data) / "lines.json"
    if not gt.is_file():
        if cfg.gt:
            raise NfkitError(f"--gt {gt}: not found")
        return None
    c2w_in = unnormalize_points(train.cameras.c2w[:, :3, 3].double(), train).numpy()
    gj, ge = read_gt(gt, cfg.gt_frame, c2w_in)
    return evaluate_wireframe(junctions_in, edges, gj, ge)


def run_wireframe(cfg: WireframeConfig) -> dict:
    """The command: writes DIR/{wireframe.ply, wireframe.json, field.safetensors, metrics.json}."""
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    t0 = time.perf_counter()
    train, lines, source = load_inputs(cfg, log)
    model = train_model(train, lines, cfg, progress=cfg.progress, checkpoint_dir=Path(cfg.out) / "checkpoint")
    t1 = time.perf_counter()
    wf, stats = extract_wireframe(model.field, model.head, model.junctions, model.grid, model.opts, train, lines,
                                  cfg, use_gjp=cfg.gjp, progress=cfg.progress)
    junctions_in = to_input(train, wf)
    out = Path(cfg.out)
    write_wireframe(out, junctions_in, wf.edges, wf.views)
    save_field(model, train, out / "field.safetensors",
               {"step": model.steps, "train_seconds": model.seconds, "source": train.source, "app": "wireframe"})
    metrics = {"lines_source": source, "views": len(train), "segments_2d": int(sum(map(len, lines))),
               "steps": model.steps, "train_seconds": round(model.seconds, 1),
               "extract_seconds": round(time.perf_counter() - t1, 1),
               "total_seconds": round(time.perf_counter() - t0, 1), **stats,
               "evaluation": score(cfg, train, junctions_in, wf.edges), "config": asdict(cfg)}
    from nfkit.atomic import write_json_atomic

    write_json_atomic(out / "metrics.json", metrics)
    return metrics
