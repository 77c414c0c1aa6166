"""Load a field file together with its occupancy grid and render options, ready to draw."""
from __future__ import annotations

import torch

from nfkit import fields
from nfkit.renderers.occupancy import OccupancyGrid
from nfkit.renderers.render import RenderOptions, default_step_size


def load_renderable(path, device: str | torch.device = "cpu"):
    """Returns ``(field, grid, opts, meta)``, field and grid on ``device`` ("cpu", "cuda[:N]" or "auto").
    A file without a saved grid gets an all-occupied 64^3 grid."""
    from nfkit.device import resolve_device

    device = resolve_device(device)
    field, meta, extras = fields.load(path, device=device, return_extras=True)
    grid_state = {k[len("occgrid."):]: v for k, v in extras.items() if k.startswith("occgrid.")}
    res = round(grid_state["density"].numel() ** (1 / 3)) if "density" in grid_state else 64
    grid = OccupancyGrid(field.aabb, res).to(device)
    if grid_state:
        grid.load_state_dict(grid_state)
    opts = RenderOptions(step_size=default_step_size(field.aabb.cpu(), 256))
    return field, grid, opts, meta


def camera_from_pose(c2w: torch.Tensor, width: int, height: int, fov_y_deg: float = 50.0):
    """A pinhole :class:`Cameras` of one view. c2w: [4, 4] world, OpenGL convention."""
    import math

    from nfkit.renderers.cameras import Cameras

    fy = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    one = lambda v: torch.tensor([float(v)])  # noqa: E731
    return Cameras(c2w.reshape(1, 4, 4).float(), one(fy), one(fy), one(width / 2), one(height / 2), width, height)
