"""The range of camera positions a scene was captured from, and random virtual cameras inside it.

Conventions: world = the field's normalised scene coordinates, +Z up (Blender / nerfstudio); cameras are OpenGL
(look down -Z, +Y up), as :class:`nfkit.renderers.Cameras`. A :class:`CameraPrior` says where virtual cameras may
stand: on spheres around ``center`` of radius in ``radius`` and elevation (angle above the XY plane through the
centre) in ``elevation``, looking at the centre plus a jitter of ``look_jitter`` x the AABB's half extent.

Where a prior comes from (:func:`field_prior`): the training cameras of a dataset when one is given; else the range
stored in the field file (``info["camera_prior"]``, written by ``nfkit fit`` and carried on by ``nfkit convert``);
failing that, the whole sphere at 1.5x the AABB's half diagonal (the NeRF-synthetic layout: lego's cameras sit at
4.03 for a 1.5 half-side box, 1.55x its half diagonal). Users: ``nfkit convert`` (where distillation samples come
from) and ``nfkit export --points`` (the views that see the points).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from nfkit.errors import FieldFileError
from nfkit.renderers.cameras import Cameras


@dataclass
class CameraPrior:
    center: tuple  # [3] world point the cameras look at (before jitter)
    radius: tuple  # (min, max) distance from the centre
    elevation: tuple  # (min, max) radians above the XY plane through the centre
    fov_y_deg: float = 50.0
    look_jitter: float = 0.15  # fraction of the AABB half extent
    half_extent: tuple = (1.0, 1.0, 1.0)


def camera_prior(aabb: torch.Tensor, cams: Cameras | None = None) -> CameraPrior:
    """Prior from the AABB [2, 3] and, when given, the training cameras (their distance and elevation ranges,
    widened by 10 % / 5 degrees, and their vertical field of view)."""
    aabb = aabb.float().cpu()
    center = (aabb[0] + aabb[1]) / 2
    half = (aabb[1] - aabb[0]) / 2
    if cams is None or len(cams) == 0:
        r = 1.5 * float(half.norm())
        return CameraPrior(tuple(center.tolist()), (r, r), (-math.pi / 2, math.pi / 2), 50.0, 0.15,
                           tuple(half.tolist()))
    p = cams.c2w[:, :3, 3].float().cpu() - center
    dist = p.norm(dim=-1).clamp_min(1e-6)
    elev = torch.asin((p[:, 2] / dist).clamp(-1, 1))
    fov = math.degrees(2 * math.atan(0.5 * cams.height / float(cams.fy.float().mean())))
    margin = math.radians(5)
    return CameraPrior(tuple(center.tolist()), (0.9 * float(dist.min()), 1.1 * float(dist.max())),
                       (max(-math.pi / 2, float(elev.min()) - margin), min(math.pi / 2, float(elev.max()) + margin)),
                       fov, 0.15, tuple(half.tolist()))


def prior_to_dict(prior: CameraPrior) -> dict:
    """JSON-ready form of ``prior`` (stored as ``info["camera_prior"]`` in field files written by ``nfkit fit`` and
    ``nfkit convert``, so a later conversion aims its cameras like the training views without the dataset)."""
    return {k: [float(v) for v in x] if isinstance(x, (tuple, list)) else float(x) for k, x in asdict(prior).items()}


def prior_from_dict(d, where: str) -> CameraPrior:
    """Inverse of :func:`prior_to_dict`; ``where`` names the file for the error. Raises FieldFileError when an
    entry is missing or malformed."""
    lengths = {"center": 3, "radius": 2, "elevation": 2, "half_extent": 3, "fov_y_deg": 0, "look_jitter": 0}

    def numbers(v, n: int) -> bool:  # n numbers in a list, or one bare number when n == 0
        vals = [v] if n == 0 else v if isinstance(v, list) else []
        return len(vals) == max(n, 1) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vals)

    ok = isinstance(d, dict) and all(k in d and numbers(d[k], n) for k, n in lengths.items())
    if ok:
        (r0, r1), (e0, e1) = d["radius"], d["elevation"]
        ok = 0 < r0 <= r1 and e0 <= e1 and 0 < d["fov_y_deg"] < 180
    if not ok:
        raise FieldFileError(f"{where}: corrupt nfkit metadata (info.camera_prior must hold {', '.join(lengths)} "
                             "as numbers, radius 0 < min <= max, field of view in (0, 180) degrees)")
    return CameraPrior(tuple(d["center"]), tuple(d["radius"]), tuple(d["elevation"]), float(d["fov_y_deg"]),
                       float(d["look_jitter"]), tuple(d["half_extent"]))


def look_at(eye: torch.Tensor, target: torch.Tensor, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """eye, target: [N, 3] -> c2w [N, 4, 4] (OpenGL: -Z towards the target, +Y as close to ``up`` as possible)."""
    z = torch.nn.functional.normalize(eye - target, dim=-1)
    upv = torch.tensor(up, dtype=eye.dtype).expand_as(z)
    x = torch.linalg.cross(upv, z)
    bad = x.norm(dim=-1) < 1e-6  # looking straight up or down: any horizontal x will do
    x[bad] = torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype)
    x = torch.nn.functional.normalize(x, dim=-1)
    y = torch.linalg.cross(z, x)
    c2w = torch.eye(4, dtype=eye.dtype).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x, y, z, eye
    return c2w


def virtual_cameras(prior: CameraPrior, n: int, size: int = 64, generator: torch.Generator | None = None) -> Cameras:
    """``n`` random pinhole cameras of ``size`` x ``size`` pixels drawn from ``prior`` (azimuth uniform, elevation
    uniform in sin, i.e. uniform on the sphere band; radius uniform)."""
    g = generator
    az = torch.rand(n, generator=g) * 2 * math.pi
    s0, s1 = math.sin(prior.elevation[0]), math.sin(prior.elevation[1])
    el = torch.asin(s0 + (s1 - s0) * torch.rand(n, generator=g))
    r = prior.radius[0] + (prior.radius[1] - prior.radius[0]) * torch.rand(n, generator=g)
    c = torch.tensor(prior.center)
    eye = c + r[:, None] * torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)
    target = c + (torch.rand(n, 3, generator=g) * 2 - 1) * prior.look_jitter * torch.tensor(prior.half_extent)
    f = 0.5 * size / math.tan(math.radians(prior.fov_y_deg) / 2)
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return Cameras(look_at(eye, target), full(f), full(f), full(size / 2), full(size / 2), size, size)


def field_prior(aabb: torch.Tensor, meta: dict, where: str, cams: Cameras | None = None) -> tuple[CameraPrior, str]:
    """The prior for a field of AABB [2, 3] whose file header is ``meta`` (``where`` names the file for errors),
    and its source: ``cams`` when given ("data"), else the file's ``info["camera_prior"]`` ("field file"), else the
    sphere around the AABB ("sphere")."""
    if cams is not None:
        return camera_prior(aabb, cams), "data"
    stored = (meta.get("info") or {}).get("camera_prior")
    if stored is not None:
        return prior_from_dict(stored, where), "field file"
    return camera_prior(aabb), "sphere"
