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
matches the colour. Learning rates: the trainer's groups (base rate per student family, :data:`FAMILY_LR`) and its
schedule's shape (warm-up, exponential decay), decaying to ``lr_final`` (3 %) of the base over the run. ``nfkit fit``
ends at 30 % for the grid families (:data:`nfkit.trainer.FIT_LR_FINAL`), but their students do not gain from it
(lego/100, 30.70 dB hash-grid teacher, time to the teacher - 0.5 dB by ``bench/convert.py --ladder 2``: tri-plane
45.8-57.2 s at 3 % against 59.6-74.5 s at 30 %, rbf 23.8-29.8 s against 37.3-40.0 s).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from nfkit.fields.base import SIGMA_CLIP, VolumeFeature
from nfkit.distill.sampling import random_rays, uniform_points
from nfkit.renderers.camera_range import CameraPrior, virtual_cameras
from nfkit.renderers.compositing import accumulate, weights_from_density
from nfkit.renderers.sampling import march
from nfkit.trainer import adam_groups


# Learning rate per student family when DistillConfig.lr is None. Measured on lego/100 (hash grid teacher, 2 cores):
# 256 x 3 mlp students 29.6 dB after 120 s at 5e-3 (a 128 x 4 at 1e-2: 29.3 dB; a 256 x 4 at 3e-3: 26.4 dB after
# 60 s); the wide mlp was not tried at 2e-2. Tri-plane students reached the teacher - 0.5 dB in ~21 s at 2e-2
# against ~25 s at 3e-2 and 1e-2. rbf students (20 s runs, 2048 samples a step): 8.8-11.0 s to the teacher - 0.5 dB at
# 4e-2, 11.0-13.7 s at 2e-2 and 8e-2, 12.2-15.3 s at 1e-2 (40 s run).
FAMILY_LR = {"mlp": 5e-3, "cam": 5e-3, "rbf": 4e-2}
GRID_LR = 2e-2


@dataclass
class DistillConfig:
    steps: int = 5000
    max_seconds: float = 0.0  # 0: no time limit
    lr: float | None = None  # None: FAMILY_LR of the student's family, else GRID_LR
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
        return self.lr if self.lr is not None else FAMILY_LR.get(family, GRID_LR)


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


# ----- the loop ----------------------------------------------------------------------------------------------------
class Distiller:
    """Distil ``teacher`` (any radiance field, frozen) into ``student`` (trained in place).

    grid: the teacher's :class:`~nfkit.renderers.OccupancyGrid` (where samples are drawn); opts: render options
    (``step_size``); prior: where virtual cameras stand (:func:`~nfkit.renderers.camera_range.field_prior`).
    """

    def __init__(self, teacher, grid, opts, student, cfg: DistillConfig, prior: CameraPrior, progress: bool = True):
        from nfkit.trainer import make_adam

        self.teacher, self.grid, self.opts, self.student, self.cfg, self.prior = teacher, grid, opts, student, cfg, prior
        self.progress = progress
        self.gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        teacher.eval().requires_grad_(False)
        self.head_copied = cfg.copy_head and copy_color_head(teacher, student)
        if getattr(teacher, "background_model", None) is not None and getattr(student, "background_model", None) is None:
            from nfkit.fields.background import attach_background

            attach_background(student, copy.deepcopy(teacher.background_model))
        lr = cfg.lr_for(student.family)
        groups = adam_groups(student, lr)
        self.optimizer = make_adam(groups, lr)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.step, self.elapsed, self.n_rays = 0, 0.0, 1024
        self.stage_seconds = {1: 0.0, 2: 0.0, 3: 0.0}
        self.history: list[dict] = []
        self.cams = None

    def progress_fraction(self) -> float:
        p = self.step / max(1, self.cfg.steps)
        if self.cfg.max_seconds > 0:
            p = max(p, self.elapsed / self.cfg.max_seconds)
        return min(1.0, p)

    def stage(self) -> int:
        p = self.progress_fraction()
        return 1 if p < self.cfg.stage1 else 2 if p < self.cfg.stage2 else 3

    def done(self) -> bool:
        return self.step >= self.cfg.steps or (self.cfg.max_seconds > 0 and self.elapsed >= self.cfg.max_seconds)

    def samples(self):
        """Rays of the current virtual cameras marched through the teacher's grid -> (rays_o, rays_d, ray_idx,
        t0, t1), packed."""
        if self.cams is None or self.step % self.cfg.redraw_every == 0:
            self.cams = virtual_cameras(self.prior, self.cfg.cameras_per_draw, generator=self.gen)
        rays_o, rays_d = random_rays(self.cams, self.n_rays, self.gen)
        dev = self.grid.aabb.device
        rays_o, rays_d = rays_o.to(dev), rays_d.to(dev)
        ri, t0, t1 = march(rays_o, rays_d, self.grid, self.opts.step_size, stratified=True)
        return rays_o, rays_d, ri, t0, t1

    def losses(self) -> tuple[torch.Tensor, dict]:
        cfg, stage = self.cfg, self.stage()
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
        vs = self.student.volume(torch.cat([x, xu]), torch.cat([d, du]))
        ls_s, ls_su = vs.log_sigma[:n_pts], vs.log_sigma[n_pts:]
        geo_s = vs.geo[:n_pts]
        mse = lambda a, b: torch.mean((a - b) ** 2) if a.numel() else a.sum() * 0.0  # noqa: E731
        same_geo = geo_s.shape[1] == vt_geo.shape[1] and geo_s.shape[1] > 0
        l_sigma = mse(clamp_log(torch.cat([ls_s, ls_su])), torch.cat([clamp_log(vt_ls), tu]))
        l_feat = mse(geo_s, vt_geo) if same_geo else l_sigma * 0.0
        stats = {"stage": stage, "samples": n_pts, "sigma": l_sigma.item(), "feature": l_feat.item()}
        w_feat = cfg.w_feature if stage < 3 else cfg.w_feature_late
        loss = w_feat * (l_sigma + l_feat)
        if stage >= 2 and n_pts:
            with torch.no_grad():
                head_t = None if vt.head is None else vt.head[keep]
                c_t = self.teacher.volume_color(VolumeFeature(vt_ls, vt_geo, head_t), d)
            head_s = None if vs.head is None else vs.head[:n_pts]
            c_s = self.student.volume_color(VolumeFeature(ls_s, geo_s, head_s), d)
            l_col = torch.sum(w_t[:, None] * (c_s - c_t) ** 2) / (3 * n_rays)
            loss = loss + cfg.w_sigma * l_sigma + cfg.w_color * l_col
            stats["color"] = l_col.item()
            if stage == 3:
                bg = torch.rand(n_rays, 3, generator=self.gen).to(x.device)
                rgb_t = self._composite(sigma_of(vt_ls), c_t, t0, t1, ri, n_rays, bg)
                rgb_s = self._composite(sigma_of(ls_s), c_s, t0, t1, ri, n_rays, bg)
                l_rgb = mse(rgb_s, rgb_t)
                loss = loss + cfg.w_rgb * l_rgb
                stats["rgb"] = l_rgb.item()
        n = max(1, n_pts)
        # At least 32 rays. A floor of 256 held a dense capture (apple video, ~30 kept samples a ray) at ~7.6k
        # samples a step whatever samples_per_step said: its mlp student reached 28.95 dB in 90 s there, 29.60 dB
        # in 85 s with this floor (tri-plane, 30 s: 31.21 / 31.18 dB either way; lego, ~7 samples a ray, keeps
        # ~290 rays and is not affected).
        self.n_rays = int(min(1 << 16, max(32, self.n_rays * cfg.samples_per_step / n)))
        stats["loss"] = loss.item()
        return loss, stats

    @staticmethod
    def _composite(sigma, rgb, t0, t1, ri, n_rays, bg):
        w, _, _ = weights_from_density(sigma, t0, t1, ri, n_rays)
        col = accumulate(w, rgb, ri, n_rays)
        op = accumulate(w, None, ri, n_rays)
        return col + (1 - op) * bg

    def lr_factor(self) -> float:
        warm = min(1.0, (self.step + 1) / 50)
        return warm * (self.cfg.lr_final ** self.progress_fraction())

    def train_step(self) -> dict:
        self.student.train()
        loss, stats = self.losses()
        self.optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            f = self.lr_factor()
            for g, lr0 in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = lr0 * f
            self.optimizer.step()
        return stats

    def fit(self, callback=None) -> list[dict]:
        """Run until ``steps`` or ``max_seconds``; ``callback(distiller)`` after each step (not timed).
        Returns the per-step statistics (``history``)."""
        from tqdm import tqdm

        bar = tqdm(total=1000, disable=not self.progress, dynamic_ncols=True,
                   desc=f"convert -> {self.student.family}", unit="‰",
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        ema = None
        while not self.done():
            t0 = time.perf_counter()
            stats = self.train_step()
            self.step += 1
            dt = time.perf_counter() - t0
            self.elapsed += dt
            self.stage_seconds[stats["stage"]] += dt
            self.history.append(stats)
            ema = stats["loss"] if ema is None else 0.9 * ema + 0.1 * stats["loss"]
            if self.step % 10 == 0 or self.done():
                post = {"stage": stats["stage"], "step": self.step, "loss": f"{ema:.4g}"}
                if "rgb" in stats:
                    post["rgb_psnr"] = f"{-10 * math.log10(max(stats['rgb'], 1e-10)):.1f}"
                bar.set_postfix(post, refresh=False)
            bar.update(int(1000 * self.progress_fraction()) - bar.n)
            if callback is not None:
                callback(self)
        bar.close()
        return self.history
