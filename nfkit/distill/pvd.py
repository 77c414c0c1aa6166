"""Progressive Volume Distillation (PVD, Fang et al., AAAI 2023) between any two radiance fields.

Both fields speak the volume-feature interface of :mod:`nfkit.fields.base` (``volume(x, d)`` ->
``VolumeFeature(log_sigma [N], geo [N, K])``, ``volume_color(vf, d)`` -> rgb [N, 3]). One step:

1. rays of random virtual cameras (:mod:`nfkit.distill.sampling`, re-drawn every ``redraw_every`` steps) are
   marched through the **teacher's** occupancy grid (stratified) -> packed samples ``(ray_idx [S], t0, t1)``, x at
   the midpoints [S, 3], d [S, 3];
2. the teacher (no grad) evaluates every sample; samples behind the teacher's surfaces (transmittance < 1e-4) are
   dropped, as the trainer's pruning pass; the student evaluates **exactly the remaining samples**, plus
   ``uniform_fraction`` x as many points uniform in the AABB (density only: teaches empty space the rays never
   reach);
3. losses, all mean squared errors, by stage (fractions ``stage1``, ``stage2`` of the run, steps or seconds,
   whichever binds first):

   * stage 1: volume features: ``[clamp(log_sigma), geo]`` (clamped to ``SIGMA_CLIP`` = [-2, 7], log space; ``geo``
     only when both fields have the same K, else the density channel alone);
   * stage 2: + ``w_sigma`` x clamped log-density + ``w_color`` x per-sample colour, the latter weighted by the
     teacher's compositing weight (colour where nothing is visible is noise in the teacher);
   * stage 3: + ``w_rgb`` x the rendered colour of both fields over the same samples and the same random
     background per ray; the feature loss continues at ``w_feature_late``.

With ``copy_head`` the student's colour MLP starts as a copy of the teacher's when the layouts allow it (same SH
degree, widths and K; the hash grid's extra raw-density input is zero-filled or dropped), so matching the features
matches the colour. Training runs on the shared loop (:mod:`nfkit.loop`) with :class:`DistillObjective`: the
trainer's groups (base rate per student family, ``distill_lr`` in :mod:`nfkit.family_defaults`) and schedule
(warm-up, exponential decay), decaying to ``lr_final`` (3 %) of the base over the run. ``nfkit fit``
ends at 30 % for the grid families (``fit_lr_final``), but their students do not gain from it
(lego/100, 30.70 dB hash-grid teacher, time to the teacher - 0.5 dB by ``bench/convert.py --ladder 2``: tri-plane
45.8-57.2 s at 3 % against 59.6-74.5 s at 30 %, rbf 23.8-29.8 s against 37.3-40.0 s).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from nfkit.fields.base import SIGMA_CLIP, VolumeFeature
from nfkit.distill.sampling import random_rays, uniform_points
from nfkit.renderers.camera_range import CameraPrior, virtual_cameras
from nfkit.renderers.compositing import accumulate, weights_from_density
from nfkit.renderers.sampling import march
from nfkit.family_defaults import family_defaults
from nfkit.loop import Loop, Objective, RayBudget, Schedule, adam_groups


@dataclass
class DistillConfig:
    steps: int = 5000
    max_seconds: float = 0.0  # 0: no time limit
    lr: float | None = None  # None: the student family's distill_lr (nfkit.family_defaults)
    # Student samples per step (rays adapt to it). Small steps pay: on lego/100 the time to the teacher - 0.5 dB
    # hardly depends on the batch for grid students (rbf 14-16 s at 1024, 2048 and 8192 samples; tri-plane 16-21 s)
    # while the mlp / cam students need about as many steps at 2048 as at 8192, so they get there ~2x sooner
    # (mlp 91-114 s against > 120 s; cam 58-73 s against 91-114 s; 120 s runs, bench/NOTES.md). Below 2048 the fixed
    # cost of a step (marching, the teacher, Python) dominates.
    samples_per_step: int = 1 << 11
    # Stage ends as fractions of the run (steps or seconds, whichever binds first). PVD spends 7 % / 17 % of its
    # 30k steps in stages 1 / 2; here they are short: with the colour head copied from the teacher, stage 1 (features
    # only) gave 20.5 dB after 7.5 s on lego/100 where the rendered loss from the start gave 26-27 dB.
    stage1: float = 0.01
    stage2: float = 0.03
    # Weights: with an MSE on log-density the density term dominates (log sigma varies over [-2, 7] inside
    # objects, where it does not change a render); on lego/100 (45 s to an mlp student) w_sigma 0.01 / features
    # 0.1 then 0 gave 21.95 dB against 20.80 dB for 0.1 / 1 then 0.1.
    w_feature: float = 0.1
    w_feature_late: float = 0.0  # feature weight in stage 3 (PVD's decays to ~0 by then)
    w_sigma: float = 0.01
    w_color: float = 1.0
    w_rgb: float = 1.0
    uniform_fraction: float = 0.125
    cameras_per_draw: int = 64
    redraw_every: int = 50
    copy_head: bool = True
    seed: int = 0
    lr_final: float = 0.03  # the rate decays exponentially to lr * this at the end of the run (module docstring)

    def lr_for(self, family: str) -> float:
        return self.lr if self.lr is not None else family_defaults(family).distill_lr


def clamp_log(ls: torch.Tensor) -> torch.Tensor:
    return ls.clamp(*SIGMA_CLIP)


def sigma_of(ls: torch.Tensor) -> torch.Tensor:
    """Density from a raw log-density as the families compute it (exp with the argument clamped at 15)."""
    return torch.exp(ls.clamp(max=15.0))


# ----- colour heads ------------------------------------------------------------------------------------------------
def color_mlp(field) -> tuple[nn.Module, int] | None:
    """(colour MLP, number of raw-density inputs) of a field whose colour head is an MLP over [SH(d), density?,
    geo], or None (SH-coefficient heads, view-modulated colour MLPs)."""
    net = getattr(field, "color_net", None)
    if net is None or not isinstance(net, nn.Sequential):
        return None
    if getattr(field, "_view_color", lambda: False)():
        return None
    return net, 1 if field.family == "hashgrid" else 0


@torch.no_grad()
def copy_color_head(teacher, student) -> bool:
    """Initialise the student's colour MLP from the teacher's when the layouts are compatible. Returns True if
    copied. Input columns are [SH (sh_degree^2), raw density (hash grid only), geo (K)]."""
    a, b = color_mlp(teacher), color_mlp(student)
    if a is None or b is None or teacher.config.sh_degree != student.config.sh_degree:
        return False
    (nt, dt), (ns, ds) = a, b
    lt = [m for m in nt if isinstance(m, nn.Linear)]
    ls = [m for m in ns if isinstance(m, nn.Linear)]
    n_sh = teacher.config.sh_degree ** 2
    if len(lt) != len(ls) or lt[0].in_features - dt != ls[0].in_features - ds:
        return False
    if any(x.weight.shape != y.weight.shape for x, y in zip(lt[1:], ls[1:])) or lt[0].out_features != ls[0].out_features:
        return False
    w = lt[0].weight
    cols = [w[:, :n_sh]]
    if ds:
        cols.append(w[:, n_sh:n_sh + 1] if dt else torch.zeros_like(w[:, :1]))
    cols.append(w[:, n_sh + dt:])
    ls[0].weight.copy_(torch.cat(cols, 1))
    ls[0].bias.copy_(lt[0].bias)
    for x, y in zip(lt[1:], ls[1:]):
        y.weight.copy_(x.weight)
        y.bias.copy_(x.bias)
    return True


# ----- the objective -----------------------------------------------------------------------------------------------
class DistillObjective(Objective):
    """The PVD losses of the module docstring as one objective of the shared loop. Terms (weighted):
    ``features`` (log-density and geo features), and from stage 2 ``density`` and ``colour``, in stage 3 ``render``;
    :meth:`step_stats` logs the unweighted ``sigma``, ``feature``, ``color``, ``rgb`` with the ``stage`` and
    ``samples``. ``history`` keeps every step's stats; ``stage_seconds`` the training seconds per stage."""

    def __init__(self, teacher, grid, opts, student, cfg: "DistillConfig", prior: CameraPrior):
        self.teacher, self.grid, self.opts, self.field, self.cfg, self.prior = teacher, grid, opts, student, cfg, prior
        self.desc = f"convert -> {student.family}"
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.budget = RayBudget(cfg.samples_per_step)
        self.cams, self._step, self._stats = None, 0, {}
        self.stage_seconds = {1: 0.0, 2: 0.0, 3: 0.0}
        self.history: list[dict] = []

    def param_groups(self, lr: float) -> list[dict]:
        return adam_groups(self.field, lr)

    def generators(self) -> dict:
        return {"distill": self.gen}

    def stage_of(self, progress: float) -> int:
        return 1 if progress < self.cfg.stage1 else 2 if progress < self.cfg.stage2 else 3

    def samples(self):
        """Rays of the current virtual cameras marched through the teacher's grid -> (rays_o, rays_d, ray_idx,
        t0, t1), packed."""
        if self.cams is None or self._step % self.cfg.redraw_every == 0:
            self.cams = virtual_cameras(self.prior, self.cfg.cameras_per_draw, generator=self.gen)
        rays_o, rays_d = random_rays(self.cams, self.budget.n_rays, self.gen)
        dev = self.grid.aabb.device
        rays_o, rays_d = rays_o.to(dev), rays_d.to(dev)
        ri, t0, t1 = march(rays_o, rays_d, self.grid, self.opts.step_size, stratified=True)
        return rays_o, rays_d, ri, t0, t1

    def losses(self, step: int, progress: float) -> dict[str, torch.Tensor]:
        cfg, stage = self.cfg, self.stage_of(progress)
        self._step = step
        rays_o, rays_d, ri, t0, t1 = self.samples()
        n_rays = rays_o.shape[0]
        x = rays_o[ri] + rays_d[ri] * ((t0 + t1) * 0.5)[:, None]
        d = rays_d[ri]
        with torch.no_grad():  # teacher at every sample; drop those behind its surfaces
            vt = self.teacher.volume(x, d)
            w_t, trans, _ = weights_from_density(sigma_of(vt.log_sigma), t0, t1, ri, n_rays)
            keep = trans > self.opts.early_stop_eps
        ri, t0, t1, x, d, w_t = ri[keep], t0[keep], t1[keep], x[keep], d[keep], w_t[keep]
        vt_ls, vt_geo = vt.log_sigma[keep], vt.geo[keep]
        n_pts = ri.numel()
        n_uni = int(cfg.uniform_fraction * max(n_pts, 256))
        xu, du = uniform_points(self.grid.aabb, n_uni, self.gen)
        with torch.no_grad():
            tu = clamp_log(self.teacher.volume(xu, du).log_sigma)
        vs = self.field.volume(torch.cat([x, xu]), torch.cat([d, du]))
        ls_s, ls_su = vs.log_sigma[:n_pts], vs.log_sigma[n_pts:]
        geo_s = vs.geo[:n_pts]
        mse = lambda a, b: torch.mean((a - b) ** 2) if a.numel() else a.sum() * 0.0  # noqa: E731
        same_geo = geo_s.shape[1] == vt_geo.shape[1] and geo_s.shape[1] > 0
        l_sigma = mse(clamp_log(torch.cat([ls_s, ls_su])), torch.cat([clamp_log(vt_ls), tu]))
        l_feat = mse(geo_s, vt_geo) if same_geo else l_sigma * 0.0
        stats = {"stage": stage, "samples": n_pts, "sigma": l_sigma.item(), "feature": l_feat.item()}
        w_feat = cfg.w_feature if stage < 3 else cfg.w_feature_late
        terms = {"features": w_feat * (l_sigma + l_feat)}
        if stage >= 2 and n_pts:
            with torch.no_grad():
                head_t = None if vt.head is None else vt.head[keep]
                c_t = self.teacher.volume_color(VolumeFeature(vt_ls, vt_geo, head_t), d)
            head_s = None if vs.head is None else vs.head[:n_pts]
            c_s = self.field.volume_color(VolumeFeature(ls_s, geo_s, head_s), d)
            l_col = torch.sum(w_t[:, None] * (c_s - c_t) ** 2) / (3 * n_rays)
            terms["density"], terms["colour"] = cfg.w_sigma * l_sigma, cfg.w_color * l_col
            stats["color"] = l_col.item()
            if stage == 3:
                bg = torch.rand(n_rays, 3, generator=self.gen).to(x.device)
                rgb_t = _composite(sigma_of(vt_ls), c_t, t0, t1, ri, n_rays, bg)
                rgb_s = _composite(sigma_of(ls_s), c_s, t0, t1, ri, n_rays, bg)
                l_rgb = mse(rgb_s, rgb_t)
                terms["render"] = cfg.w_rgb * l_rgb
                stats["rgb"] = l_rgb.item()
        self.budget.update(n_pts)
        self._stats = stats
        return terms

    def step_stats(self) -> dict:
        return self._stats

    def after_step(self, stats: dict, seconds: float) -> None:
        self.stage_seconds[stats["stage"]] += seconds
        self.history.append(stats)

    def postfix(self, ema: dict) -> dict:
        post = {"stage": self._stats.get("stage"), "loss": f"{ema['loss']:.4g}"}
        if "rgb" in self._stats:
            post["rgb_psnr"] = f"{-10 * math.log10(max(self._stats['rgb'], 1e-10)):.1f}"
        return post

    def state(self) -> dict:
        return {"n_rays": self.budget.n_rays}

    def load_state(self, state: dict) -> None:
        self.budget.n_rays = state["n_rays"]


def _composite(sigma, rgb, t0, t1, ri, n_rays, bg):
    w, _, _ = weights_from_density(sigma, t0, t1, ri, n_rays)
    col = accumulate(w, rgb, ri, n_rays)
    op = accumulate(w, None, ri, n_rays)
    return col + (1 - op) * bg


class Distiller:
    """Distil ``teacher`` (any radiance field, frozen) into ``student`` (trained in place) on the shared loop.

    grid: the teacher's :class:`~nfkit.renderers.OccupancyGrid` (where samples are drawn); opts: render options
    (``step_size``); prior: where virtual cameras stand (:func:`~nfkit.renderers.camera_range.field_prior`).
    ``step``, ``elapsed`` are the loop's; ``history`` and ``stage_seconds`` the objective's.
    """

    def __init__(self, teacher, grid, opts, student, cfg: DistillConfig, prior: CameraPrior, progress: bool = True):
        self.teacher, self.grid, self.opts, self.student, self.cfg, self.prior = teacher, grid, opts, student, cfg, prior
        self.progress = progress
        torch.manual_seed(cfg.seed)
        teacher.eval().requires_grad_(False)
        self.head_copied = cfg.copy_head and copy_color_head(teacher, student)
        if getattr(teacher, "background_model", None) is not None and getattr(student, "background_model", None) is None:
            from nfkit.fields.background import attach_background

            attach_background(student, copy.deepcopy(teacher.background_model))
        self.objective = DistillObjective(teacher, grid, opts, student, cfg, prior)
        lr = cfg.lr_for(student.family)
        self.loop = Loop(self.objective, Schedule(steps=cfg.steps, max_seconds=cfg.max_seconds, lr=lr,
                                                  lr_final=cfg.lr_final), progress=progress)
        self.optimizer = self.loop.optimizer
        self.history, self.stage_seconds = self.objective.history, self.objective.stage_seconds

    step = property(lambda self: self.loop.step)
    elapsed = property(lambda self: self.loop.elapsed)
    n_rays = property(lambda self: self.objective.budget.n_rays)

    def progress_fraction(self) -> float:
        return self.loop.progress_fraction()

    def stage(self) -> int:
        return self.objective.stage_of(self.progress_fraction())

    def done(self) -> bool:
        return self.loop.done()

    def train_step(self) -> dict:
        return self.loop.train_step()

    def fit(self, callback=None) -> list[dict]:
        """Run until ``steps`` or ``max_seconds``; ``callback(distiller)`` after each step (not timed).
        Returns the per-step statistics (``history``)."""
        self.loop.run(callback=None if callback is None else (lambda _: callback(self)))
        return self.history
