"""``nfkit fit``'s library half: :class:`FitConfig` (the CLI's options) and :class:`Trainer`, which builds the field,
occupancy grid and background model, and trains them on the shared loop (:mod:`nfkit.loop`) with the objective of
the field's kind (:mod:`nfkit.objectives`: radiance for density fields, surface for SDF fields), then writes the
field file and metrics.

A density field's step: random pixels of all training images -> rays -> occupancy-grid samples -> field ->
compositing (random background per ray for RGBA data; for RGB data -- real, unbounded captures -- a learned
environment map over the ray direction, :mod:`nfkit.fields.background`) -> MSE loss -> Adam. The sample
budget per step is fixed (``samples_per_step``); the number of rays adapts to it, as in nerfacc's examples.
With a background model, an L1 prior on ``sigma * step`` at random points of the AABB (``sparsity``) empties
space no view explains, and the occupancy grid is re-evaluated from the final field (:meth:`Trainer.refresh_grid`).
Per-family defaults (learning rate, final fraction, samples per step): :mod:`nfkit.family_defaults`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field as dc_field, replace
from pathlib import Path

import torch

from nfkit.atomic import write_json_atomic
from nfkit import fields
from nfkit.datasets import SceneData
from nfkit.device import resolve_device
from nfkit.errors import NfkitError
from nfkit.evaluation import evaluate
from nfkit.family_defaults import DEFAULT, DEFAULT_FIT_SAMPLES, family_defaults
from nfkit.fields.background import EnvironmentMap, attach_background
from nfkit.loop import Loop, RayBudget, Schedule, adam_groups, make_adam  # noqa: F401  (the last two re-exported)
from nfkit.renderers import OccupancyGrid, RenderOptions, default_step_size


@dataclass
class FitConfig:
    """Options of ``nfkit fit`` (every field is a CLI flag)."""

    data: str = ""
    out: str = "outputs/fit"
    field: str = "hashgrid"
    steps: int = 5000
    max_seconds: float = 300.0  # training stops at steps or max_seconds, whichever first; 0: no time limit
    resume: bool = False
    samples_per_step: int = 0  # 0: the family's default (nfkit.family_defaults: 65536, 16384 for neus)
    lr: float = 0.0  # 0: the family's default (nfkit.family_defaults)
    lr_final: float = 0.0  # the rate decays exponentially to lr * this at the end of the run; 0: the family's
    # default (nfkit.family_defaults; see Trainer.lr_factor)
    grid_resolution: int = 64
    n_steps_per_ray: int = 256  # marching step = AABB diagonal / this
    max_side: int = 800  # downscale images so the larger side is at most this, with a notice (0: full size)
    allow_outside_paths: bool = False  # transforms.json may name images outside its folder (absolute or ../)
    frames: int = 40  # frames chosen from a video input
    poses: str = "colmap"  # how a capture is posed: colmap (pycolmap's mapper) | neural (nfkit sfm, an app)
    background: str = "auto"  # auto (envmap for RGB data, none for RGBA) | envmap | none
    sparsity: float = -1.0  # weight of the L1 density prior at random AABB points; -1: auto (see Trainer)
    checkpoint_seconds: float = 60.0
    eval_views: int = 0  # 0: all test views
    seed: int = 0
    log2_hashmap_size: int = 0  # 0: the family's default
    field_options: dict = dc_field(default_factory=dict)  # extra field config overrides (key -> value)
    device: str = "auto"  # auto (cuda when torch.cuda.is_available(), else cpu) | cpu | cuda[:N]
    # SDF fields only (nfkit.objectives.surface): loss weights and NeuS's cosine annealing
    eikonal_weight: float = 0.1
    mask_weight: float = 0.1  # used when the images have an alpha channel
    curvature_weight: float = 0.0
    anneal_fraction: float = 0.1  # cos_anneal_ratio ramps 0 -> 1 over this fraction of the run


def load_fit_config(path) -> dict:
    """The options stored in a ``config.json`` that ``nfkit fit`` wrote (any subset of :class:`FitConfig`'s fields),
    checked against the fields' types -> dict name -> value. Raises NfkitError with one line."""
    import json
    import typing

    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except OSError as e:
        raise NfkitError(f"--config {path}: cannot read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NfkitError(f"--config {path}: not valid JSON ({' '.join(str(e).split())[:100]})") from None
    if not isinstance(obj, dict):
        raise NfkitError(f"--config {path}: expected a JSON object of nfkit fit options")
    hints = typing.get_type_hints(FitConfig)
    unknown = sorted(set(obj) - set(hints))
    if unknown:
        raise NfkitError(f"--config {path}: unknown option(s) {', '.join(unknown)}")
    for k, v in obj.items():
        t = hints[k]
        ok = (isinstance(v, bool) if t is bool else isinstance(v, int) and not isinstance(v, bool) if t is int
              else isinstance(v, (int, float)) and not isinstance(v, bool) if t is float else isinstance(v, t))
        if not ok:
            raise NfkitError(f"--config {path}: option {k!r} must be a {t.__name__}, got {json.dumps(v)[:40]}")
    return {k: float(v) if hints[k] is float else v for k, v in obj.items()}


def field_overrides(cfg: FitConfig, image_side: int = 0) -> dict:
    """Field config from the CLI. For hash-grid families (``hashgrid``, ``neus`` with its default backbone) the finest
    resolution follows the images unless given:
    4x the larger image side as a power of two, between 256 and 2048 (finer levels than the pixels can
    resolve only add hash collisions, which short CPU runs never average out)."""
    over = dict(cfg.field_options)
    if cfg.log2_hashmap_size:
        over["log2_hashmap_size"] = cfg.log2_hashmap_size
    grid_backbone = cfg.field == "hashgrid" or (cfg.field == "neus" and over.get("backbone", "hashgrid") == "hashgrid")
    if grid_backbone and image_side and "max_resolution" not in over:
        over["max_resolution"] = int(min(2048, max(256, 2 ** math.ceil(math.log2(4 * image_side)))))
    return over


# Per-family defaults live in nfkit/family_defaults.py (one table for fit, convert and the apps).
DEFAULT_LR = DEFAULT.fit_lr
DEFAULT_LR_FINAL = DEFAULT.fit_lr_final


def fit_lr(family: str) -> float:
    return family_defaults(family).fit_lr


def fit_lr_final(family: str) -> float:
    return family_defaults(family).fit_lr_final


def fit_samples(family: str) -> int:
    return family_defaults(family).fit_samples or DEFAULT_FIT_SAMPLES


def resolve_config(cfg: FitConfig) -> FitConfig:
    """``cfg`` with the family's defaults filled in (lr, lr_final, samples_per_step 0) after checking them; the
    caller's config is not modified."""
    if not cfg.lr >= 0:
        raise NfkitError(f"--lr must be >= 0 (0: the family's default), got {cfg.lr}")
    if not 0 <= cfg.lr_final <= 1:
        raise NfkitError(f"--lr-final must be in [0, 1] (0: the family's default), got {cfg.lr_final}")
    if cfg.samples_per_step < 0:
        raise NfkitError(f"--samples-per-step must be >= 0 (0: the family's default), got {cfg.samples_per_step}")
    return replace(cfg, lr=cfg.lr or fit_lr(cfg.field), lr_final=cfg.lr_final or fit_lr_final(cfg.field),
                   samples_per_step=cfg.samples_per_step or fit_samples(cfg.field))


SPARSITY = 5e-2
MIN_RAYS = RayBudget.MIN_RAYS  # fewest rays a step, whatever samples_per_step asks (see RayBudget)


class Trainer:
    """``nfkit fit``: fits ``cfg.field`` to ``train`` on ``cfg.device`` with the shared loop (:class:`~nfkit.loop.Loop`)
    and the objective of the field's kind: :class:`~nfkit.objectives.RadianceObjective` for density fields,
    :class:`~nfkit.objectives.SurfaceObjective` for SDF fields. Field, occupancy grid and background model live on
    the device; on CUDA so do the training pixels unless ``PIXELS_ON_DEVICE`` is False. Test data stays on the CPU.
    ``step``, ``elapsed`` and ``total_samples`` are the loop's."""

    PIXELS_ON_DEVICE = True

    def __init__(self, cfg: FitConfig, train: SceneData, test: SceneData | None, progress: bool = True):
        torch.manual_seed(cfg.seed)
        cfg = resolve_config(cfg)  # saved resolved in the field file's config
        self.cfg, self.train, self.test, self.progress = cfg, train, test, progress
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.out)
        self.field = fields.build_field(cfg.field, field_overrides(cfg, max(train.images.shape[1:3])),
                                        train.aabb).to(self.device)
        self.grid = OccupancyGrid(train.aabb, cfg.grid_resolution).to(self.device)
        self.opts = RenderOptions(step_size=default_step_size(train.aabb, cfg.n_steps_per_ray))
        if self._background_kind() == "envmap":
            attach_background(self.field, EnvironmentMap())
        # Unbounded captures leave much of the AABB unseen (under the table, behind the object): an L1 prior on
        # the opacity sigma * step at random points empties it, so the occupancy grid can skip it.
        # (Density fields only by default: on an SDF it would pull |sdf| up everywhere, against the eikonal term.)
        auto = SPARSITY if self._background_kind() == "envmap" and self.field.kind == "density" else 0.0
        self.sparsity = cfg.sparsity if cfg.sparsity >= 0 else auto
        self.objective = self._objective()
        obj = self.objective
        self.pixels, self.cams, self.cam_centres = obj.pixels, obj.cams, obj.cam_centres
        self.loop = Loop(self.objective, Schedule(steps=cfg.steps, max_seconds=cfg.max_seconds, lr=cfg.lr,
                                                  lr_final=cfg.lr_final, checkpoint_seconds=cfg.checkpoint_seconds),
                         checkpoint_dir=self.out / "checkpoint", progress=progress)
        self.optimizer = self.loop.optimizer
        self.base_lrs = self.loop.base_lrs
        self.history: list[dict] = []

    def _objective(self):
        from nfkit.objectives import RadianceObjective, SurfaceObjective

        args = (self.field, self.grid, self.opts, self.train, self.device, self.cfg.samples_per_step, self.sparsity,
                self.PIXELS_ON_DEVICE)
        if self.field.kind == "sdf":
            cfg = self.cfg
            return SurfaceObjective(*args, eikonal_weight=cfg.eikonal_weight, mask_weight=cfg.mask_weight,
                                    curvature_weight=cfg.curvature_weight, anneal_fraction=cfg.anneal_fraction)
        if self.field.kind != "density":
            raise NfkitError(f"--field {self.cfg.field}: a {self.field.kind} field cannot be fitted to images")
        return RadianceObjective(*args)

    # the loop's clock, readable and settable as before
    step = property(lambda self: self.loop.step, lambda self, v: setattr(self.loop, "step", v))
    elapsed = property(lambda self: self.loop.elapsed, lambda self, v: setattr(self.loop, "elapsed", v))
    total_samples = property(lambda self: self.loop.total_samples,
                             lambda self, v: setattr(self.loop, "total_samples", v))
    n_rays = property(lambda self: self.objective.budget.n_rays)

    def _background_kind(self) -> str:
        """"envmap" or "none": RGBA data trains on random backgrounds (no model); RGB data has real surroundings."""
        kind = self.cfg.background
        if kind not in ("auto", "envmap", "none"):
            raise NfkitError(f"--background must be auto, envmap or none, got {kind!r}")
        if kind == "auto":
            kind = "none" if self.train.images.shape[-1] == 4 else "envmap"
        return kind

    def normalization(self) -> dict:
        return self.objective.normalization()

    def lr_factor(self, progress: float) -> float:
        """Short warm-up, then exponential decay to ``cfg.lr_final`` of the base rate at the end of the run (the
        family's default: :mod:`nfkit.family_defaults`)."""
        return self.loop.lr_factor(progress)

    def progress_fraction(self) -> float:
        return self.loop.progress_fraction()

    def train_step(self) -> dict:
        """One step of the loop; ``loss`` is the colour MSE (the other terms are logged beside it)."""
        stats = self.loop.train_step()
        return {**stats, "total": stats["loss"], "loss": stats["rgb"]}

    def done(self) -> bool:
        return self.loop.done()

    def checkpoint(self):
        self.loop.checkpoint()

    def resume(self):
        self.loop.resume()

    def fit(self, callback=None):
        """Run until ``steps`` or ``max_seconds``. ``callback(trainer)`` runs after each step (not timed)."""
        if self.cfg.resume:
            self.resume()
        self.loop.run(callback=None if callback is None else (lambda _: callback(self)),
                      step_fn=lambda: self.train_step())  # looked up each step: wrappers of train_step see it

    def grid_density(self):
        return self.objective.grid_density()

    def refresh_grid(self, samples_per_cell: int = 4, chunk: int = 1 << 16) -> None:
        self.objective.refresh_grid(samples_per_cell, chunk)

    def evaluate(self, write_renders: bool = True) -> dict:
        if self.test is None:
            return {}
        return evaluate(self.field, self.grid, self.test, self.opts, self.out / "renders" if write_renders else None,
                        self.cfg.eval_views, progress=self.progress)

    def write_outputs(self, metrics_extra: dict | None = None) -> dict:
        from nfkit.renderers.camera_range import camera_prior, prior_to_dict

        field_path = self.out / "field.safetensors"
        # The training cameras' range, so that `nfkit convert` aims its virtual cameras like them without the data.
        prior = prior_to_dict(camera_prior(self.field.aabb, self.train.cameras))
        fields.save(self.field, field_path, normalization=self.normalization(),
                    info={"step": self.step, "train_seconds": self.elapsed, "source": self.train.source,
                          "camera_prior": prior},
                    extra_tensors={f"occgrid.{k}": v for k, v in self.grid.state_dict().items()})
        ev = self.evaluate()
        metrics = {
            "psnr": ev.get("psnr"), "ssim": ev.get("ssim"), "steps": self.step,
            "train_seconds": round(self.elapsed, 2),
            "samples_per_second": round(self.total_samples / max(self.elapsed, 1e-9), 1),
            "n_params": sum(p.numel() for p in self.field.parameters()), "field": str(field_path),
            "family": self.cfg.field, "eval_views": ev.get("n_views", 0), "config": asdict(self.cfg),
        }
        metrics.update(metrics_extra or {})
        write_json_atomic(self.out / "metrics.json", metrics)
        return metrics
