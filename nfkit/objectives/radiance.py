"""Radiance fields against posed images (``nfkit fit`` on a density field).

One step: random pixels of all training images -> rays -> occupancy-grid samples -> field -> compositing (random
background per ray for RGBA data; for RGB data -- real, unbounded captures -- the field's learned environment map
over the ray direction, :mod:`nfkit.fields.background`) -> MSE (term ``"rgb"``). With a background model, an L1
prior on ``sigma * step`` at random points of the AABB (term ``"sparsity"``) empties space no view explains, and
the occupancy grid is re-evaluated from the final field (:meth:`RadianceObjective.refresh_grid`, at ``finish``).
Rays per step adapt to ``samples_per_step`` (:class:`~nfkit.loop.RayBudget`).
"""
from __future__ import annotations

import torch

from nfkit.datasets import SceneData, composite
from nfkit.fields.background import ray_background
from nfkit.loop import Objective, RayBudget, adam_groups
from nfkit.losses import mse
from nfkit.renderers import OccupancyGrid, RenderOptions, occupancy_density_fn, pixel_rays, render_rays

SPARSITY_POINTS = 4096


class RadianceObjective(Objective):
    """Fits ``field`` (on ``device``, with ``grid``) to ``train``'s images. On CUDA the training pixels [N*H*W, C],
    their camera/row/column indices and the cameras live on the device too unless ``pixels_on_device`` is False
    (then each sampled batch moves)."""

    def __init__(self, field, grid: OccupancyGrid, opts: RenderOptions, train: SceneData, device: torch.device,
                 samples_per_step: int, sparsity: float = 0.0, pixels_on_device: bool = True):
        self.field, self.grid, self.opts, self.train, self.device = field, grid, opts, train, device
        self.sparsity = sparsity
        self.budget = RayBudget(samples_per_step)
        self.desc = f"fit {field.family}"
        self._prepare_pixels(pixels_on_device)
        self.cam_centres = self.cams.c2w[:, :3, 3].to(device)
        self._samples = 0

    def _prepare_pixels(self, on_device: bool) -> None:
        imgs = self.train.images
        n, h, w, c = imgs.shape
        self.pixels = imgs.reshape(-1, c)
        ii, vv, uu = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
        self.pix_cam, self.pix_v, self.pix_u = ii.reshape(-1), vv.reshape(-1), uu.reshape(-1)
        self.has_alpha = c == 4
        self.cams = self.train.cameras
        if self.device.type != "cpu" and on_device:  # CUDA: sample batches where the field is
            self.pixels, self.pix_cam, self.pix_v, self.pix_u = (
                t.to(self.device) for t in (self.pixels, self.pix_cam, self.pix_v, self.pix_u))
            self.cams = self.cams.to(self.device)

    def param_groups(self, lr: float) -> list[dict]:
        """The family's groups, then the background model's parameters in a group of their own."""
        bg = getattr(self.field, "background_model", None)
        bg_params = [] if bg is None else list(bg.parameters())
        ids = {id(p) for p in bg_params}
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in ids]} for g in adam_groups(self.field, lr)]
        if bg_params:
            groups.append({"params": bg_params, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]

    def sample_batch(self):
        """Random training pixels -> (rays_o [R, 3], rays_d [R, 3], target rgb [R, 3], background [R, 3],
        alpha [R] or None) on the device; RGBA targets are composited on the random background."""
        n = self.budget.n_rays
        sel = torch.randint(0, self.pixels.shape[0], (n,), device=self.pixels.device)
        rays_o, rays_d = pixel_rays(self.cams, self.pix_cam[sel], self.pix_u[sel], self.pix_v[sel])
        px = self.pixels[sel]
        if px.dtype == torch.uint8:  # pixels stored as bytes: [0, 255] -> [0, 1]
            px = px.float() / 255.0
        if self.pixels.device != self.device:  # pixels kept on the CPU for a CUDA field: move the batch
            rays_o, rays_d, px = rays_o.to(self.device), rays_d.to(self.device), px.to(self.device)
        bg = torch.rand(n, 3, device=self.device) if self.has_alpha else ray_background(self.field, rays_d)
        target = composite(px, bg) if self.has_alpha else px
        return rays_o, rays_d, target, bg, (px[:, 3] if self.has_alpha else None)

    def losses(self, step: int, progress: float) -> dict[str, torch.Tensor]:
        rays_o, rays_d, target, bg, _ = self.sample_batch()
        # The grid is updated after the batch is drawn, keeping the random stream of the earlier trainer.
        self.grid.update(step, self.grid_density(), self.opts.step_size)
        out = render_rays(self.field, self.grid, rays_o, rays_d, self.opts, bg, stratified=True)
        terms = {"rgb": mse(out["rgb"], target)}
        if self.sparsity > 0:
            terms["sparsity"] = self.sparsity * self.density_prior()
        return self._account(terms, out["n_samples"])

    def _account(self, terms: dict, samples: int) -> dict:
        """Record the step's samples, adapt the rays, and detach everything when no sample was drawn."""
        self._samples = samples
        self.budget.update(samples)
        return terms if samples > 0 else {k: v.detach() for k, v in terms.items()}

    def density_prior(self) -> torch.Tensor:
        """Mean opacity ``sigma * step`` at :data:`SPARSITY_POINTS` random points of the AABB."""
        lo, hi = self.grid.aabb[0], self.grid.aabb[1]
        x = lo + torch.rand(SPARSITY_POINTS, 3, device=lo.device) * (hi - lo)
        return (self.grid_density()(x) * self.opts.step_size).mean()

    def step_stats(self) -> dict:
        return {"samples": self._samples}

    def postfix(self, ema: dict) -> dict:
        import math

        return {"loss": f"{ema['rgb']:.4f}", "psnr": f"{-10 * math.log10(max(ema['rgb'], 1e-10)):.2f}"}

    def finish(self) -> None:
        if self.sparsity > 0:
            self.refresh_grid()

    def state(self) -> dict:
        return {"n_rays": self.budget.n_rays}

    def load_state(self, state: dict) -> None:
        self.budget.n_rays = state["n_rays"]

    def normalization(self) -> dict:
        return {"transform": self.train.transform.tolist(), "scale": float(self.train.scale)}

    def grid_density(self):
        """The occupancy grid's density function (:func:`~nfkit.renderers.occupancy_density_fn`): ``field.density``;
        for a field whose density depends on the view the density seen from a random training camera; for an SDF
        field a density stand-in from |sdf|."""
        return occupancy_density_fn(self.field, self.cam_centres, self.grid.resolution)

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
