"""Fitting a field to posed images: the training loop behind ``nfkit fit``.

Data flow per step: random pixels of all training images -> rays -> occupancy-grid samples -> field ->
compositing (random background per ray for RGBA data; for RGB data -- real, unbounded captures -- a learned
environment map over the ray direction, :mod:`nfkit.fields.background`) -> MSE loss -> Adam. The sample
budget per step is fixed (``samples_per_step``); the number of rays adapts to it, as in nerfacc's examples.
With a background model, an L1 prior on ``sigma * step`` at random points of the AABB (``sparsity``) empties
space no view explains, and the occupancy grid is re-evaluated from the final field (:meth:`refresh_grid`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field as dc_field, replace
from pathlib import Path

import torch

from nfkit.atomic import write_json_atomic
from nfkit import fields
from nfkit.checkpoint import load_checkpoint, save_checkpoint
from nfkit.datasets import SceneData, composite
from nfkit.device import resolve_device
from nfkit.errors import NfkitError
from nfkit.evaluation import evaluate
from nfkit.fields.background import EnvironmentMap, attach_background, ray_background
from nfkit.renderers import OccupancyGrid, RenderOptions, default_step_size, pixel_rays, render_rays
from nfkit.renderers.view_density import camera_density_fn


@dataclass
class FitConfig:
    """Options of ``nfkit fit`` (every field is a CLI flag)."""

    data: str = ""
    out: str = "outputs/fit"
    field: str = "hashgrid"
    steps: int = 5000
    max_seconds: float = 0.0  # 0: no time limit
    resume: bool = False
    samples_per_step: int = 1 << 16
    lr: float = 0.0  # 0: the family's default (FIT_LR)
    lr_final: float = 0.0  # the rate decays exponentially to lr * this at the end of the run; 0: the family's
    # default (FIT_LR_FINAL; see Trainer.lr_factor)
    grid_resolution: int = 64
    n_steps_per_ray: int = 256  # marching step = AABB diagonal / this
    max_side: int = 0  # downscale images so the larger side is at most this (0: keep)
    frames: int = 40  # frames chosen from a video input
    background: str = "auto"  # auto (envmap for RGB data, none for RGBA) | envmap | none
    sparsity: float = -1.0  # weight of the L1 density prior at random AABB points; -1: auto (see Trainer)
    checkpoint_seconds: float = 60.0
    eval_views: int = 0  # 0: all test views
    seed: int = 0
    log2_hashmap_size: int = 0  # 0: the family's default
    field_options: dict = dc_field(default_factory=dict)  # extra field config overrides (key -> value)
    device: str = "auto"  # auto (cuda when torch.cuda.is_available(), else cpu) | cpu | cuda[:N]


def field_overrides(cfg: FitConfig, image_side: int = 0) -> dict:
    """Field config from the CLI. For grid families the finest resolution follows the images unless given:
    4x the larger image side as a power of two, between 256 and 2048 (finer levels than the pixels can
    resolve only add hash collisions, which short CPU runs never average out)."""
    over = dict(cfg.field_options)
    if cfg.log2_hashmap_size:
        over["log2_hashmap_size"] = cfg.log2_hashmap_size
    if cfg.field == "hashgrid" and image_side and "max_resolution" not in over:
        over["max_resolution"] = int(min(2048, max(256, 2 ** math.ceil(math.log2(4 * image_side)))))
    return over


# Base learning rate of ``nfkit fit`` per family (``FitConfig.lr`` 0), else DEFAULT_LR. Times to 29.78 dB on lego/100
# from scratch (4096 samples a step, 150 s schedule, 2 cores; bench/NOTES.md): the rbf field 71.5-89.4 s at 1e-2,
# 49.5-57.0 s at 2e-2 and 4e-2, 57.0-65.5 s at 8e-2; tri-plane 32.6-37.5 s at 1e-2 and 4e-2, 28.3-32.6 s at 2e-2
# (80 s schedule). The wide mlp is the same at 5e-3 and 1e-2; cam is better at 1e-2 (28.7 against 27.0 dB after
# 300 s); the hash grid was tuned at 1e-2.
DEFAULT_LR = 1e-2
FIT_LR = {"rbf": 4e-2, "triplane": 2e-2}
# Where the decay of ``nfkit fit`` ends, as a fraction of the base rate, per family (``FitConfig.lr_final`` 0), else
# DEFAULT_LR_FINAL (bench/NOTES.md, "Learning-rate decay"). A short CPU run is a few hundred steps, and decaying to
# 3 % spent most of them at a rate too small to learn: at 30 % the hash grid reaches 29.98 dB on lego/100 in 60 s
# instead of 27.64 dB, the tri-plane 29.41 instead of 27.25 dB, the rbf field 29.46 instead of 25.6 dB in 90 s. The
# wide mlp and cam networks of bench/convert.py stalled below its target at 30 % (cam 29.39 dB after 640 s; at 3 % it
# got there in 119-160 s), so they keep 3 %.
DEFAULT_LR_FINAL = 0.3
FIT_LR_FINAL = {"mlp": 0.03, "cam": 0.03}


def fit_lr(family: str) -> float:
    return FIT_LR.get(family, DEFAULT_LR)


def fit_lr_final(family: str) -> float:
    return FIT_LR_FINAL.get(family, DEFAULT_LR_FINAL)


def make_adam(groups, lr: float) -> torch.optim.Optimizer:
    """Adam as instant-ngp (eps 1e-15, betas 0.9/0.99); the fused single-pass kernel when torch has it (~10x faster
    on a CPU for a 10M-parameter hash table)."""
    try:
        return torch.optim.Adam(groups, lr=lr, eps=1e-15, betas=(0.9, 0.99), fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(groups, lr=lr, eps=1e-15, betas=(0.9, 0.99))


def adam_groups(field, lr: float) -> list[dict]:
    """Adam parameter groups of a field: the family's own ``param_groups(lr)`` when it has one (learning rates per
    group), else grids/encodings without weight decay and the networks with 1e-6. Empty groups are dropped."""
    if hasattr(field, "param_groups"):
        groups = field.param_groups(lr)
    else:
        grid = [p for n, p in field.named_parameters() if "encoding" in n or "plane" in n]
        rest = [p for n, p in field.named_parameters() if not ("encoding" in n or "plane" in n)]
        groups = [{"params": grid, "weight_decay": 0.0}, {"params": rest, "weight_decay": 1e-6}]
    return [g for g in groups if g["params"]]


SPARSITY, SPARSITY_POINTS = 5e-2, 4096
# Fewest rays a step, whatever samples_per_step asks (rays adapt to it; the distiller's floor too). It only binds
# while rays hold more than samples_per_step / MIN_RAYS samples: early in a run, before the occupancy grid has emptied
# the fog, at small budgets. A floor of 256 made the first ~250 steps at 4096 samples ~10x too big on lego/100 (rbf:
# 8 steps/s, then 35); at 32, rbf reaches bench/convert.py's 30.20 dB target at 143-179 s instead of 179-224 s and
# the tri-plane at 60-75 s instead of 72-89 s (mlp and cam unchanged). nfkit fit's default 2^16 samples never meet it.
MIN_RAYS = 32


class Trainer:
    """Fits ``cfg.field`` to ``train`` on ``cfg.device``: field, occupancy grid and background model live there;
    on CUDA so do the training pixels [N*H*W, C], their camera/row/column indices and the cameras (set
    ``PIXELS_ON_DEVICE = False`` to keep them on the CPU and move each sampled batch). Test data stays on the CPU."""

    PIXELS_ON_DEVICE = True

    def __init__(self, cfg: FitConfig, train: SceneData, test: SceneData | None, progress: bool = True):
        torch.manual_seed(cfg.seed)
        if cfg.lr < 0:
            raise NfkitError(f"--lr must be >= 0 (0: the family's default), got {cfg.lr}")
        if not 0 <= cfg.lr_final <= 1:
            raise NfkitError(f"--lr-final must be in [0, 1] (0: the family's default), got {cfg.lr_final}")
        if cfg.lr == 0:
            cfg = replace(cfg, lr=fit_lr(cfg.field))  # saved resolved in the field file's config
        if cfg.lr_final == 0:
            cfg = replace(cfg, lr_final=fit_lr_final(cfg.field))
        self.cfg, self.train, self.test, self.progress = cfg, train, test, progress
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.out)
        self.field = fields.build_field(cfg.field, field_overrides(cfg, max(train.images.shape[1:3])),
                                        train.aabb).to(self.device)
        self.grid = OccupancyGrid(train.aabb, cfg.grid_resolution).to(self.device)
        self.opts = RenderOptions(step_size=default_step_size(train.aabb, cfg.n_steps_per_ray))
        groups = adam_groups(self.field, cfg.lr)
        if self._background_kind() == "envmap":  # after the family's groups: its parameters get their own group
            attach_background(self.field, EnvironmentMap())
            groups = [*groups, {"params": list(self.field.background_model.parameters()), "weight_decay": 0.0}]
        # Unbounded captures leave much of the AABB unseen (under the table, behind the object): an L1 prior on
        # the opacity sigma * step at random points empties it, so the occupancy grid can skip it.
        auto = SPARSITY if self._background_kind() == "envmap" else 0.0
        self.sparsity = cfg.sparsity if cfg.sparsity >= 0 else auto
        self.optimizer = make_adam([g for g in groups if g["params"]], cfg.lr)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self._prepare_pixels()
        self.cam_centres = self.cams.c2w[:, :3, 3].to(self.device)
        self.step, self.elapsed, self.n_rays = 0, 0.0, 1024
        self.history: list[dict] = []

    def _background_kind(self) -> str:
        """"envmap" or "none": RGBA data trains on random backgrounds (no model); RGB data has real surroundings."""
        kind = self.cfg.background
        if kind not in ("auto", "envmap", "none"):
            raise NfkitError(f"--background must be auto, envmap or none, got {kind!r}")
        if kind == "auto":
            kind = "none" if self.train.images.shape[-1] == 4 else "envmap"
        return kind

    def _prepare_pixels(self):
        imgs = self.train.images
        n, h, w, c = imgs.shape
        self.pixels = imgs.reshape(-1, c)
        ii, vv, uu = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
        self.pix_cam, self.pix_v, self.pix_u = ii.reshape(-1), vv.reshape(-1), uu.reshape(-1)
        self.has_alpha = c == 4
        self.cams = self.train.cameras
        if self.device.type != "cpu" and self.PIXELS_ON_DEVICE:  # CUDA: sample batches where the field is
            self.pixels, self.pix_cam, self.pix_v, self.pix_u = (
                t.to(self.device) for t in (self.pixels, self.pix_cam, self.pix_v, self.pix_u))
            self.cams = self.cams.to(self.device)

    def normalization(self) -> dict:
        return {"transform": self.train.transform.tolist(), "scale": float(self.train.scale)}

    def lr_factor(self, progress: float) -> float:
        """Short warm-up, then exponential decay to ``cfg.lr_final`` of the base rate at the end of the run (the
        family's default: :data:`FIT_LR_FINAL`)."""
        warm = min(1.0, (self.step + 1) / 50)
        return warm * (self.cfg.lr_final ** min(1.0, progress))

    def progress_fraction(self) -> float:
        p = self.step / max(1, self.cfg.steps)
        if self.cfg.max_seconds > 0:
            p = max(p, self.elapsed / self.cfg.max_seconds)
        return min(1.0, p)

    def train_step(self) -> dict:
        cfg = self.cfg
        sel = torch.randint(0, self.pixels.shape[0], (self.n_rays,), device=self.pixels.device)
        rays_o, rays_d = pixel_rays(self.cams, self.pix_cam[sel], self.pix_u[sel], self.pix_v[sel])
        px = self.pixels[sel]
        if self.pixels.device != self.device:  # pixels kept on the CPU for a CUDA field: move the batch
            rays_o, rays_d, px = rays_o.to(self.device), rays_d.to(self.device), px.to(self.device)
        bg = torch.rand(self.n_rays, 3, device=self.device) if self.has_alpha else ray_background(self.field, rays_d)
        target = composite(px, bg) if self.has_alpha else px
        self.grid.update(self.step, self.grid_density(), self.opts.step_size)
        out = render_rays(self.field, self.grid, rays_o, rays_d, self.opts, bg, stratified=True)
        loss = mse = torch.mean((out["rgb"] - target) ** 2)
        if self.sparsity > 0:
            lo, hi = self.grid.aabb[0], self.grid.aabb[1]
            x = lo + torch.rand(SPARSITY_POINTS, 3, device=lo.device) * (hi - lo)
            loss = loss + self.sparsity * (self.grid_density()(x) * self.opts.step_size).mean()
        self.optimizer.zero_grad(set_to_none=True)
        if out["n_samples"] > 0:
            loss.backward()
            f = self.lr_factor(self.progress_fraction())
            for g, lr0 in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = lr0 * f
            self.optimizer.step()
        n_s = max(1, out["n_samples"])
        self.n_rays = int(min(1 << 16, max(MIN_RAYS, self.n_rays * cfg.samples_per_step / n_s)))
        return {"loss": mse.item(), "samples": out["n_samples"]}

    def done(self) -> bool:
        if self.step >= self.cfg.steps:
            return True
        return self.cfg.max_seconds > 0 and self.elapsed >= self.cfg.max_seconds

    def checkpoint(self):
        save_checkpoint(self.out / "checkpoint", self.field, self.grid, self.optimizer,
                        {"step": self.step, "elapsed": self.elapsed, "n_rays": self.n_rays,
                         "samples": self.total_samples}, self.normalization())

    def resume(self):
        loop = load_checkpoint(self.out / "checkpoint", self.field, self.grid, self.optimizer)
        self.step, self.elapsed, self.n_rays = loop["step"], loop["elapsed"], loop["n_rays"]
        self.total_samples = loop.get("samples", 0)

    def fit(self, callback=None):
        """Run until ``steps`` or ``max_seconds``. ``callback(trainer)`` runs after each step (not timed)."""
        from tqdm import tqdm

        self.total_samples = getattr(self, "total_samples", 0)
        if self.cfg.resume:
            self.resume()
        # The bar counts progress in 0.1% of whichever limit binds first (steps or seconds), so its ETA is right.
        bar = tqdm(total=1000, initial=int(1000 * self.progress_fraction()), disable=not self.progress,
                   dynamic_ncols=True, desc=f"fit {self.cfg.field}", unit="‰",
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        last_ckpt = time.perf_counter()
        ema_loss = None
        try:
            while not self.done():
                t0 = time.perf_counter()
                self.field.train()
                stats = self.train_step()
                self.step += 1
                self.elapsed += time.perf_counter() - t0
                self.total_samples += stats["samples"]
                ema_loss = stats["loss"] if ema_loss is None else 0.9 * ema_loss + 0.1 * stats["loss"]
                if self.step % 10 == 0 or self.done():
                    psnr = -10 * math.log10(max(ema_loss, 1e-10))
                    sps = self.total_samples / max(self.elapsed, 1e-9)
                    post = {"step": self.step, "loss": f"{ema_loss:.4f}", "psnr": f"{psnr:.2f}",
                            "samples/s": f"{sps / 1e3:.0f}k"}
                    bar.set_postfix(post, refresh=False)
                bar.update(int(1000 * self.progress_fraction()) - bar.n)
                if callback is not None:
                    callback(self)
                if time.perf_counter() - last_ckpt > self.cfg.checkpoint_seconds:
                    self.checkpoint()
                    last_ckpt = time.perf_counter()
        except KeyboardInterrupt:
            bar.close()
            self.checkpoint()
            raise NfkitError(f"interrupted at step {self.step}; checkpoint saved in {self.out / 'checkpoint'} "
                             "(continue with --resume)") from None
        bar.close()
        if self.sparsity > 0:
            self.refresh_grid()
        self.checkpoint()

    def grid_density(self):
        """The occupancy grid's density function: ``field.density``, or for a field whose density depends on the
        view the density seen from a random training camera (:func:`~nfkit.renderers.view_density.camera_density_fn`)."""
        return camera_density_fn(self.field, self.cam_centres)

    @torch.no_grad()
    def refresh_grid(self, samples_per_cell: int = 4, chunk: int = 1 << 16) -> None:
        """Re-evaluates every occupancy cell from the final field (the max of ``sigma * step`` at the centre and
        ``samples_per_cell`` jittered points), replacing the running maximum, which still remembers early
        training's density in regions the sparsity prior has emptied since."""
        g, n = self.grid, self.grid.resolution ** 3
        density = self.grid_density()
        vals = []
        for c in torch.arange(n, device=g.density.device).split(chunk):
            v = density(g.cell_points(c, jitter=False))
            for _ in range(samples_per_cell):
                v = torch.maximum(v, density(g.cell_points(c)))
            vals.append(v * self.opts.step_size)
        vals = torch.cat(vals).float()
        g.density.copy_(vals)
        g.binary.copy_(vals > vals.mean().clamp(max=0.01))

    def evaluate(self, write_renders: bool = True) -> dict:
        if self.test is None:
            return {}
        return evaluate(self.field, self.grid, self.test, self.opts, self.out / "renders" if write_renders else None,
                        self.cfg.eval_views)

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
