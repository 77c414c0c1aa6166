"""NEAT's training objective for the shared loop (:mod:`nfkit.loop`).

One step: one training view v; ``line_rays`` rays from v's support pixels (pixels within ``support_radius`` of a
2-D segment with the foot point inside it), each carrying its segment (a, b) and score s, plus ``rgb_rays``
random pixels of random views (colour only: with a few thousand steps instead of NEAT's ~100k, support pixels
alone leave the empty space unconstrained). Terms (weights as NEAT's confs):

* ``rgb``: L1 colour on every ray (black background; RGBA data composited on black) and, for RGBA data, a mask
  BCE (``mask_weight``);
* ``eikonal`` (0.1): (|grad f| - 1)^2 at the ray samples and at uniform AABB points;
* ``line`` (0.01): the rendered segment projected into v; endpoint order chosen per ray by the pixel error; rays
  with mean absolute pixel error above ``gate`` (100 px at 512, scaled with the image) or that miss the surface
  (weight sum < :data:`~.model.MIN_OPACITY`) are invalid; loss = mean
  |.| of the 4 coordinates in normalised (K^-1) image coordinates, weighted by the score, summed over valid rays
  and divided by their number;
* ``j3d`` (0.1), ``j2d`` (0.01): Global Junction Perceiving. The rendered endpoints (detached) are projected into
  v and Hungarian-matched to v's 2-D junctions (pixel L2); matches at or below the median cost (NEAT's ABC
  ``use_median``) and under ``junction_gate_px`` are kept; those are Hungarian-matched to the decoded global
  junctions (cost: L1 in 3-D + 0.1 L1 of the normalised projections); j3d = mean L1 3-D distance of the pairs,
  j2d = mean L1 distance of their normalised projections. Only the latents and their decoder learn from it.
"""
from __future__ import annotations

import numpy as np
import torch

from nfkit.cameras import pixel_rays, project
from nfkit.errors import NfkitError
from nfkit.loop import Objective, adam_groups
from nfkit.losses import eikonal, mask_bce
from nfkit.renderers import occupancy_density_fn

from .lines2d import support_pixels
from .matching import hungarian, match_points
from .model import MIN_OPACITY, render_line_rays

EIKONAL_POINTS = 512


def to_image(cams, i: int, x: torch.Tensor):
    """World points [P, 3] -> (pixels [P, 2], normalised K^-1 coordinates [P, 2]) in view i (differentiable)."""
    px = project(cams, i, x)
    n = torch.stack([(px[:, 0] - cams.cx[i]) / cams.fx[i], (px[:, 1] - cams.cy[i]) / cams.fy[i]], -1)
    return px, n


def px_to_norm(cams, i: int, px: torch.Tensor) -> torch.Tensor:
    return torch.stack([(px[..., 0] - cams.cx[i]) / cams.fx[i], (px[..., 1] - cams.cy[i]) / cams.fy[i]], -1)


class WireframeObjective(Objective):
    """See the module docstring. ``lines``: one :class:`~.lines2d.ViewLines` per training view; ``cfg``: the
    app's :class:`~.config.WireframeConfig`."""

    desc = "wireframe"

    def __init__(self, field, head, junctions, grid, opts, train, lines, cfg):
        self.field, self.head, self.junctions, self.grid, self.opts = field, head, junctions, grid, opts
        self.train, self.lines, self.cfg = train, lines, cfg
        self.cams = train.cameras
        n, h, w, c = train.images.shape
        self.h, self.w = h, w
        self.pixels = train.images.reshape(-1, c)
        self.has_alpha = c == 4
        self.support = [support_pixels(ln, h, w, cfg.support_radius) for ln in lines]
        self.views = [i for i, (idx, _) in enumerate(self.support) if len(idx)]
        if not self.views:
            raise NfkitError("no support pixels near any 2-D line segment: nothing to learn a wireframe from")
        self.segs = [torch.as_tensor(ln.segments, dtype=torch.float32) for ln in lines]
        self.scores = [torch.as_tensor(ln.scores, dtype=torch.float32) for ln in lines]
        self.gate = 100.0 * max(h, w) / 512.0
        self.junction_gate = cfg.junction_gate_px * max(h, w) / 512.0
        self.cam_centres = self.cams.c2w[:, :3, 3]
        self._samples, self._stats = 0, {}

    def param_groups(self, lr: float) -> list[dict]:
        return adam_groups(self.field, lr) + [{"params": list(self.head.parameters()), "weight_decay": 0.0},
                                              {"params": list(self.junctions.parameters()), "weight_decay": 0.0}]

    def _batch(self):
        cfg = self.cfg
        v = self.views[int(torch.randint(len(self.views), ()))]
        idx, lab = self.support[v]
        sel = torch.randint(len(idx), (cfg.line_rays,))
        pix, lab = idx[sel], lab[sel]
        cam = torch.full_like(pix, v)
        cam_r = torch.randint(len(self.cams), (cfg.rgb_rays,))
        pix_r = torch.randint(self.h * self.w, (cfg.rgb_rays,))
        cam, pix = torch.cat([cam, cam_r]), torch.cat([pix, pix_r])
        rays_o, rays_d = pixel_rays(self.cams, cam, pix % self.w, pix // self.w)
        px = self.pixels[cam * self.h * self.w + pix]
        return v, lab, rays_o, rays_d, px

    def losses(self, step: int, progress: float) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        v, lab, rays_o, rays_d, px = self._batch()
        self.grid.update(step, occupancy_density_fn(self.field, self.cam_centres, self.grid.resolution),
                         self.opts.step_size)
        out = render_line_rays(self.field, self.head, self.grid, rays_o, rays_d, self.opts, stratified=True)
        target = px[:, :3] * px[:, 3:] if self.has_alpha else px[:, :3]
        terms = {"rgb": (out["rgb"] - target).abs().mean()}
        if self.has_alpha and cfg.mask_weight > 0:
            terms["mask"] = cfg.mask_weight * mask_bce(out["opacity"], px[:, 3])
        lo, hi = self.grid.aabb[0], self.grid.aabb[1]
        _, g_rand = self.field.sdf_and_gradient(lo + torch.rand(EIKONAL_POINTS, 3) * (hi - lo), create_graph=True)
        terms["eikonal"] = cfg.w_eikonal * eikonal(torch.cat([out["sample_gradients"], g_rand]))
        lines3d = out["lines"][: cfg.line_rays]
        seen = out["weight_sum"][: cfg.line_rays] >= MIN_OPACITY
        terms["line"] = cfg.w_line * self._line_loss(v, lines3d, lab, seen)
        if cfg.gjp:
            j3, j2 = self._junction_loss(v, lines3d.detach()[seen])
            terms["j3d"], terms["j2d"] = cfg.w_j3d * j3, cfg.w_j2d * j2
        self._samples = out["n_samples"]
        return terms if self._samples > 0 else {k: t.detach() for k, t in terms.items()}

    def _line_loss(self, v: int, lines3d: torch.Tensor, lab: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """lines3d [R, 6] rendered segments, lab [R] their 2-D segment in view v, seen [R] rays that meet the
        surface -> the weighted L1 (normalised)."""
        pa, na = to_image(self.cams, v, lines3d[:, :3])
        pb, nb = to_image(self.cams, v, lines3d[:, 3:])
        pred_px, pred_n = torch.cat([pa, pb], -1), torch.cat([na, nb], -1)
        tgt = self.segs[v][lab]
        tgt_sw = tgt[:, [2, 3, 0, 1]]
        with torch.no_grad():
            e1 = (pred_px - tgt).abs().mean(-1)
            e2 = (pred_px - tgt_sw).abs().mean(-1)
            swap = e2 < e1
            valid = ((torch.minimum(e1, e2) < self.gate) & seen).float()
            self._stats["line_px"] = float(torch.minimum(e1, e2).median())
        tgt = torch.where(swap[:, None], tgt_sw, tgt)
        tgt_n = px_to_norm(self.cams, v, tgt.reshape(-1, 2)).reshape(-1, 4)
        w = self.scores[v][lab] * valid
        return (w * (pred_n - tgt_n).abs().mean(-1)).sum() / valid.sum().clamp_min(1.0)

    def _junction_loss(self, v: int, lines3d: torch.Tensor):
        """GJP terms (see the module docstring) -> (j3d, j2d) scalar tensors (zero when nothing matched)."""
        zero = torch.zeros((), requires_grad=False)
        j2d_ref = self.lines[v].junctions
        if len(j2d_ref) == 0:
            return zero, zero
        jl = lines3d.reshape(-1, 3)
        jl_px, jl_n = to_image(self.cams, v, jl)
        ok = torch.isfinite(jl_px).all(-1)
        jl, jl_px, jl_n = jl[ok], jl_px[ok], jl_n[ok]
        r, _, cost = match_points(jl_px.numpy().astype(np.float64), j2d_ref.astype(np.float64))
        keep = (cost <= np.median(cost)) & (cost < self.junction_gate) if len(cost) else cost > 0
        if not keep.any():
            return zero, zero
        rk = torch.as_tensor(r[keep])
        jk, jk_n = jl[rk], jl_n[rk]
        jg = self.junctions()
        _, jg_n = to_image(self.cams, v, jg)
        with torch.no_grad():
            c = torch.cdist(jk, jg, p=1) + 0.1 * torch.cdist(jk_n, jg_n, p=1)
        r2, c2, _ = hungarian(c.numpy())
        r2, c2 = torch.as_tensor(r2), torch.as_tensor(c2)
        j3 = (jg[c2] - jk[r2]).abs().sum(-1).mean()
        j2 = (jg_n[c2] - jk_n[r2]).abs().sum(-1).mean()
        self._stats["n_junction_matches"] = float(len(r2))
        return j3, j2

    def modules(self) -> dict[str, torch.nn.Module]:
        """Checkpointed beside the field (``--resume``): the attraction head and the junction latents + decoder."""
        return {"head": self.head, "junctions": self.junctions}

    def step_stats(self) -> dict:
        return {"samples": self._samples, **self._stats}

    def postfix(self, ema: dict) -> dict:
        post = {"rgb": f"{ema.get('rgb', 0):.4f}", "line_px": f"{ema.get('line_px', 0):.2f}"}
        if "j3d" in ema:
            post["j3d"] = f"{ema['j3d']:.3g}"
        return post

    def normalization(self) -> dict:
        return {"transform": self.train.transform.tolist(), "scale": float(self.train.scale)}
