"""Camera conventions (renderers/cameras.py): OpenGL <-> OpenCV, rays through pixel centres, distortion,
and the ray/AABB slab test on hand-made rays."""
from __future__ import annotations

import math

import pytest
import torch

from nfkit.renderers.cameras import (Cameras, distort, image_rays, opencv_to_opengl, opengl_to_opencv, pixel_rays,
                                     project, ray_aabb, undistort)

DIST = [0.08, -0.03, 0.002, -0.0015, 0.01]  # moderate k1, k2, p1, p2, k3


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """[4, 4] OpenGL camera-to-world at ``eye`` looking at ``target`` (camera -Z towards it, +Y roughly ``up``)."""
    eye, target, up = (torch.tensor(v, dtype=torch.float32) for v in (eye, target, up))
    back = eye - target
    back = back / back.norm()
    right = torch.linalg.cross(up, back)
    right = right / right.norm()
    m = torch.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, torch.linalg.cross(back, right), back, eye
    return m


def make_cams(dist=None, width=40, height=30) -> Cameras:
    """Two cameras with different, asymmetric intrinsics (fx != fy, principal point off-centre)."""
    c2w = torch.stack([look_at((0.5, -3.0, 1.2)), look_at((2.5, 2.0, -1.0), (0.2, 0.1, 0.0))])
    t = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    d = None if dist is None else torch.tensor([dist, [-0.05, 0.02, -0.001, 0.002, 0.0]], dtype=torch.float32)
    return Cameras(c2w, t(36.0, 41.0), t(34.0, 40.0), t(21.3, 19.0), t(14.2, 16.5), width, height, d)


def random_pose(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    m = torch.eye(4)
    m[:3, :3], m[:3, 3] = q, torch.randn(3, generator=g) * 3
    return m


# ------------------------------------------------------------------------------------------- OpenGL / OpenCV


def test_gl_cv_flip_is_an_involution():
    """opencv_to_opengl(opengl_to_opencv(c2w)) == c2w and vice versa (batched), and the flip negates camera Y, Z
    axes while keeping X and the position."""
    c2w = torch.stack([random_pose(s) for s in range(4)])
    cv = opengl_to_opencv(c2w)
    assert torch.allclose(opencv_to_opengl(cv), c2w, atol=1e-6)
    assert torch.allclose(opengl_to_opencv(opencv_to_opengl(c2w)), c2w, atol=1e-6)
    assert torch.equal(cv[:, :3, 0], c2w[:, :3, 0]) and torch.equal(cv[:, :3, 3], c2w[:, :3, 3])
    assert torch.equal(cv[:, :3, 1], -c2w[:, :3, 1]) and torch.equal(cv[:, :3, 2], -c2w[:, :3, 2])


def test_point_in_front_has_negative_gl_z_and_positive_cv_z():
    """A point in front of the camera (along its viewing direction): OpenGL camera z < 0, OpenCV camera z > 0,
    with the same magnitude; x agrees and y flips sign."""
    for seed in range(3):
        c2w = random_pose(seed)
        view_dir = -c2w[:3, 2]  # OpenGL: the camera looks down -Z
        p = c2w[:3, 3] + 2.5 * view_dir + 0.3 * c2w[:3, 0] + 0.2 * c2w[:3, 1]
        ph = torch.cat([p, torch.ones(1)])
        gl = torch.linalg.inv(c2w) @ ph
        cv = torch.linalg.inv(opengl_to_opencv(c2w)) @ ph
        assert gl[2] < 0 < cv[2]
        assert math.isclose(float(gl[2]), -2.5, abs_tol=1e-5) and math.isclose(float(cv[2]), 2.5, abs_tol=1e-5)
        assert math.isclose(float(gl[0]), float(cv[0]), abs_tol=1e-5)
        assert math.isclose(float(gl[1]), -float(cv[1]), abs_tol=1e-5)


# ------------------------------------------------------------------------------------------------- pixel rays


@pytest.mark.parametrize("dist", [None, DIST], ids=["pinhole", "distorted"])
def test_points_along_pixel_rays_project_to_pixel_centres(dist):
    """For pixels (u, v) of both cameras (incl. the corners), o + t d projects back to (u + 0.5, v + 0.5)."""
    cams = make_cams(dist)
    g = torch.Generator().manual_seed(0)
    u = torch.cat([torch.tensor([0, 39, 0, 39]), torch.randint(0, 40, (40,), generator=g)])
    v = torch.cat([torch.tensor([0, 0, 29, 29]), torch.randint(0, 30, (40,), generator=g)])
    for cam in range(2):
        o, d = pixel_rays(cams, torch.full_like(u, cam), u, v)
        assert torch.allclose(d.norm(dim=-1), torch.ones(len(u)), atol=1e-5)
        assert torch.allclose(o, cams.c2w[cam, :3, 3].expand_as(o))
        for t in (0.5, 2.0, 7.0):
            uv = project(cams, cam, o + t * d)
            assert torch.allclose(uv, torch.stack([u + 0.5, v + 0.5], -1), atol=2e-3), (cam, t)


def test_principal_point_ray_is_the_camera_minus_z_axis():
    """A ray through the principal point (u + 0.5 = cx, v + 0.5 = cy) points along -Z of the camera (its
    world direction is -c2w[:3, 2]); off-axis: +u goes towards camera +X, +v towards camera -Y (image rows go down)."""
    cams = make_cams()
    for cam in range(2):
        u = (cams.cx[cam] - 0.5).reshape(1)
        v = (cams.cy[cam] - 0.5).reshape(1)
        _, d = pixel_rays(cams, torch.tensor([cam]), u, v)
        assert torch.allclose(d[0], -cams.c2w[cam, :3, 2], atol=1e-6)
        _, d_right = pixel_rays(cams, torch.tensor([cam]), u + 5, v)
        _, d_down = pixel_rays(cams, torch.tensor([cam]), u, v + 5)
        assert float((d_right[0] - d[0]) @ cams.c2w[cam, :3, 0]) > 0
        assert float((d_down[0] - d[0]) @ cams.c2w[cam, :3, 1]) < 0


def test_image_rays_are_row_major():
    """image_rays(i) lists pixels row by row: ray k is pixel (u, v) = (k % W, k // W)."""
    cams = make_cams(width=6, height=4)
    o, d = image_rays(cams, 1)
    assert d.shape == (24, 3)
    k = torch.arange(24)
    _, d2 = pixel_rays(cams, torch.ones(24, dtype=torch.long), k % 6, k // 6)
    assert torch.allclose(d, d2)


# ------------------------------------------------------------------------------------------------- distortion


def test_undistort_inverts_distort():
    """undistort(distort(xy)) == xy to 1e-6 for moderate k1, k2, p1, p2, k3 over normalised coords in
    [-0.6, 0.6]^2 (about a 60 degree field of view), for each coefficient alone and all together."""
    g = torch.Generator().manual_seed(1)
    xy = (torch.rand(500, 2, generator=g) - 0.5) * 1.2
    cases = [DIST, [0.1, 0, 0, 0, 0], [0, -0.05, 0, 0, 0], [0, 0, 0.003, 0, 0], [0, 0, 0, -0.003, 0],
             [0, 0, 0, 0, 0.02], [-0.12, 0.04, -0.002, 0.001, -0.005]]
    for dist in cases:
        dd = torch.tensor(dist).expand(500, 5)
        xd = distort(xy, dd)
        if any(dist):
            assert float((xd - xy).abs().max()) > 1e-4  # the distortion does something
        assert torch.allclose(undistort(xd, dd), xy, rtol=0, atol=1e-6), dist
    zero = torch.zeros(500, 5)
    assert torch.equal(distort(xy, zero), xy)


def test_distort_matches_opencv_formula_by_hand():
    """One point by hand: x = 0.3, y = -0.2, r2 = 0.13; radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3;
    xd = x radial + 2 p1 x y + p2 (r2 + 2 x^2); yd = y radial + p1 (r2 + 2 y^2) + 2 p2 x y."""
    k1, k2, p1, p2, k3 = DIST
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    out = distort(torch.tensor([[x, y]]), torch.tensor([DIST]))
    assert torch.allclose(out, torch.tensor([[xd, yd]]), atol=1e-7)


# ---------------------------------------------------------------------------------------------------- ray_aabb


def test_ray_aabb_hand_made_rays():
    """Slab test against [-1, 1]^3 with hand-computed t values:

    0: from (-3, 0, 0) along +x: enters at 2, leaves at 4;
    1: from (3, 0.5, 0) along -x: 2 .. 4;
    2: from the centre along +z: inside, t_near clamps to 0, t_far 1;
    3: from (-2, -2, -2) along (1, 1, 1)/sqrt3: sqrt3 .. 3 sqrt3 (through two corners);
    4: from (-2, 2, 0) along +x: parallel to the y slab, outside it: miss;
    5: from (2, 0, 0) along +x: box behind the ray: miss;
    6: from (0, 0, 5) along (0.6, 0, -0.8): reaches z = 1 at t = 5 but x = 3 there, and leaves the x slab at
       t = 1/0.6 = 5/3 before: miss;
    7: from (0, 0, 3) along (0.28, 0, -0.96): enters the top face at t = 2/0.96, leaves the +x face at 1/0.28.
    """
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    s3 = 1 / math.sqrt(3)
    o = torch.tensor([[-3, 0, 0], [3, 0.5, 0], [0, 0, 0], [-2, -2, -2], [-2, 2, 0], [2, 0, 0], [0, 0, 5.0],
                      [0, 0, 3]])
    d = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 0, 1], [s3, s3, s3], [1, 0, 0], [1, 0, 0], [0.6, 0, -0.8],
                      [0.28, 0, -0.96]])
    tn, tf = ray_aabb(o, d, aabb)
    exp_hit = {0: (2.0, 4.0), 1: (2.0, 4.0), 2: (0.0, 1.0), 3: (math.sqrt(3), 3 * math.sqrt(3)),
               7: (2 / 0.96, 1 / 0.28)}
    for i, (a, b) in exp_hit.items():
        assert tn[i] < tf[i], i
        assert math.isclose(float(tn[i]), a, abs_tol=1e-5) and math.isclose(float(tf[i]), b, abs_tol=1e-5), (
            i, float(tn[i]), float(tf[i]))
    for i in (4, 5, 6):
        assert tf[i] <= tn[i], i
    assert bool((tn >= 0).all())


def test_ray_aabb_non_cubic_box_and_hit_points_on_surface():
    """For random rays aimed at a non-cubic box, the entry and exit points lie on its surface (one coordinate on
    a face, the others inside), and a ray aimed at the box centre from outside always hits."""
    aabb = torch.tensor([[-0.5, -1.0, 0.2], [1.5, 0.3, 0.9]])
    g = torch.Generator().manual_seed(2)
    centre = aabb.mean(0)
    o = centre + torch.nn.functional.normalize(torch.randn(64, 3, generator=g), dim=-1) * 4
    d = torch.nn.functional.normalize(centre - o + 0.1 * torch.randn(64, 3, generator=g), dim=-1)
    tn, tf = ray_aabb(o, d, aabb)
    hit = tf > tn
    assert bool(hit.all())
    for t in (tn, tf):
        p = o + t[:, None] * d
        inside = ((p >= aabb[0] - 1e-4) & (p <= aabb[1] + 1e-4)).all(-1)
        on_face = ((p - aabb[0]).abs().min(-1).values < 1e-4) | ((p - aabb[1]).abs().min(-1).values < 1e-4)
        assert bool(inside.all()) and bool(on_face.all())
