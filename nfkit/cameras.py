"""Pinhole cameras with OpenCV distortion, and ray generation (the base module shared by datasets and renderers;
:mod:`nfkit.renderers.cameras` re-exports it).

Conventions (same as nerfstudio's transforms.json):

* ``c2w``: ``[N, 4, 4]`` (or ``[N, 3, 4]``) camera-to-world, **OpenGL** camera axes: +X right, +Y up, the
  camera looks down -Z.
* Pixel ``(u, v)`` addresses column ``u`` and row ``v``; its centre sits at ``(u + 0.5, v + 0.5)`` in the
  continuous image plane where ``(cx, cy)`` is the principal point.
* Distortion: OpenCV radial/tangential ``(k1, k2, p1, p2)`` (optionally ``k3``), applied to normalised
  OpenCV coordinates (x right, y down).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Flips the camera's Y and Z axes: OpenGL <-> OpenCV (its own inverse).
GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def opengl_to_opencv(c2w: torch.Tensor) -> torch.Tensor:
    """``c2w``: [..., 4, 4] OpenGL camera-to-world -> the same camera with OpenCV axes."""
    return c2w @ GL_TO_CV.to(c2w)


def opencv_to_opengl(c2w: torch.Tensor) -> torch.Tensor:
    """``c2w``: [..., 4, 4] OpenCV camera-to-world -> OpenGL axes (the flip is its own inverse)."""
    return c2w @ GL_TO_CV.to(c2w)


@dataclass
class Cameras:
    """A batch of pinhole cameras (all images of one dataset share ``width``/``height``).

    c2w: [N, 4, 4] world, OpenGL convention.  fx, fy, cx, cy: [N] pixels.
    dist: [N, 5] OpenCV (k1, k2, p1, p2, k3); zeros for an ideal pinhole.
    """

    c2w: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: int
    height: int
    dist: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx) -> "Cameras":
        idx = torch.as_tensor(idx).reshape(-1)
        return Cameras(
            self.c2w[idx], self.fx[idx], self.fy[idx], self.cx[idx], self.cy[idx], self.width, self.height,
            None if self.dist is None else self.dist[idx],
        )

    def to(self, device) -> "Cameras":
        """The same cameras with every tensor on ``device`` (rays then come out there)."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Cameras(mv(self.c2w), mv(self.fx), mv(self.fy), mv(self.cx), mv(self.cy), self.width, self.height,
                       mv(self.dist))

    def scaled(self, factor: float) -> "Cameras":
        """The same cameras with images resized by ``factor`` (pixel-centre convention kept)."""
        w, h = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        sx, sy = w / self.width, h / self.height
        return Cameras(self.c2w, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, w, h, self.dist)


def distort(xy: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """OpenCV distortion of normalised OpenCV image coordinates. xy: [..., 2], dist: [..., 5]."""
    k1, k2, p1, p2, k3 = dist.unbind(-1)
    x, y = xy.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], -1)


def undistort(xy_d: torch.Tensor, dist: torch.Tensor, iters: int = 10) -> torch.Tensor:
    """Inverts :func:`distort` with Newton steps (2x2 Jacobian per point). xy_d: [..., 2], dist: [..., 5]."""
    xy = xy_d.clone()
    for _ in range(iters):
        xy = xy.detach().requires_grad_(True)
        with torch.enable_grad():
            f = distort(xy, dist) - xy_d
            gx = torch.autograd.grad(f[..., 0].sum(), xy, retain_graph=True)[0]
            gy = torch.autograd.grad(f[..., 1].sum(), xy)[0]
        a, b, c, d = gx[..., 0], gx[..., 1], gy[..., 0], gy[..., 1]
        det = a * d - b * c
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        fx, fy = f[..., 0].detach(), f[..., 1].detach()
        step = torch.stack([(d * fx - b * fy) / det, (-c * fx + a * fy) / det], -1)
        xy = xy.detach() - step
    return xy.detach()


def pixel_rays(cams: Cameras, cam_idx: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
    """Rays through pixel centres.

    cam_idx, u, v: [R] (long or float; ``u`` is the column, ``v`` the row, integers address pixels).
    Returns ``rays_o``: [R, 3] world, ``rays_d``: [R, 3] world, unit length, OpenGL camera convention.
    """
    fx, fy, cx, cy = cams.fx[cam_idx], cams.fy[cam_idx], cams.cx[cam_idx], cams.cy[cam_idx]
    x = (u.float() + 0.5 - cx) / fx  # OpenCV normalised coords (y down)
    y = (v.float() + 0.5 - cy) / fy
    if cams.dist is not None and bool((cams.dist != 0).any()):
        xy = undistort(torch.stack([x, y], -1), cams.dist[cam_idx])
        x, y = xy[..., 0], xy[..., 1]
    d_cam = torch.stack([x, -y, -torch.ones_like(x)], -1)  # OpenGL camera axes
    c2w = cams.c2w[cam_idx]
    d = (c2w[:, :3, :3] @ d_cam[..., None])[..., 0]
    d = d / d.norm(dim=-1, keepdim=True)
    return c2w[:, :3, 3].expand_as(d).contiguous(), d


def project(cams: Cameras, cam_idx: int, points: torch.Tensor) -> torch.Tensor:
    """World points [P, 3] -> pixel coordinates [P, 2] (continuous; pixel centres at +0.5), with distortion."""
    c2w = cams.c2w[cam_idx]
    w2c = torch.linalg.inv(c2w)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    x, y = pc[:, 0] / -pc[:, 2], -pc[:, 1] / -pc[:, 2]  # OpenCV normalised coordinates
    xy = torch.stack([x, y], -1)
    if cams.dist is not None:
        xy = distort(xy, cams.dist[cam_idx].expand(xy.shape[0], 5))
    return torch.stack([xy[:, 0] * cams.fx[cam_idx] + cams.cx[cam_idx], xy[:, 1] * cams.fy[cam_idx] + cams.cy[cam_idx]], -1)


def image_rays(cams: Cameras, i: int):
    """All rays of camera ``i`` in row-major pixel order: ([H*W, 3], [H*W, 3])."""
    v, u = torch.meshgrid(torch.arange(cams.height), torch.arange(cams.width), indexing="ij")
    idx = torch.full((cams.height * cams.width,), i, dtype=torch.long)
    return pixel_rays(cams, idx, u.reshape(-1), v.reshape(-1))


def ray_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb: torch.Tensor):
    """Slab test. rays_o, rays_d: [R, 3]; aabb: [2, 3] (min, max).

    Returns ``t_near, t_far``: [R]; ``t_near`` is clamped at 0 and a miss has ``t_far <= t_near``.
    """
    inv = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t0 = (aabb[0] - rays_o) * inv
    t1 = (aabb[1] - rays_o) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far
