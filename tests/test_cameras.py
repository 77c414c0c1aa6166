"""Camera conventions: OpenGL <-> OpenCV, pixel centres, distortion round trips, ray-AABB."""
import math

import torch

from nfkit.renderers.cameras import (Cameras, distort, image_rays, opencv_to_opengl, opengl_to_opencv, pixel_rays,
                                     project, ray_aabb, undistort)


def _camera(dist=None, w=40, h=30):
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([0.3, -0.2, 4.0])  # at +Z, looking down -Z towards the origin (OpenGL)
    one = lambda v: torch.tensor([float(v)])  # noqa: E731
    return Cameras(c2w[None], one(35), one(33), one(w / 2 + 0.7), one(h / 2 - 0.4), w, h,
                   None if dist is None else torch.tensor([dist]))


def test_opengl_opencv_flip_is_an_involution_and_flips_depth_sign():
    c2w = torch.linalg.qr(torch.randn(3, 3))[0]
    m = torch.eye(4)
    m[:3, :3] = c2w
    m[:3, 3] = torch.randn(3)
    assert torch.allclose(opencv_to_opengl(opengl_to_opencv(m)), m, atol=1e-6)
    cam = _camera()
    p = torch.tensor([0.3, -0.2, 0.0, 1.0])  # straight in front of the camera
    z_gl = (torch.linalg.inv(cam.c2w[0]) @ p)[2]
    z_cv = (torch.linalg.inv(opengl_to_opencv(cam.c2w[0])) @ p)[2]
    assert z_gl < 0 < z_cv


def test_pixel_rays_go_through_pixel_centres():
    for dist in (None, [0.1, -0.05, 0.01, -0.02, 0.01]):
        cam = _camera(dist)
        u = torch.tensor([0, 7, 39, 20])
        v = torch.tensor([0, 12, 29, 15])
        o, d = pixel_rays(cam, torch.zeros(4, dtype=torch.long), u, v)
        pts = o + 2.5 * d
        uv = project(cam, 0, pts)
        assert torch.allclose(uv, torch.stack([u + 0.5, v + 0.5], -1).float(), atol=1e-3)


def test_principal_ray_is_minus_z_and_image_rays_are_row_major():
    cam = _camera()
    cam.cx[:] = 20.0
    cam.cy[:] = 15.0
    o, d = pixel_rays(cam, torch.tensor([0]), torch.tensor([19.5]), torch.tensor([14.5]))
    assert torch.allclose(d[0], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)
    o, d = image_rays(cam, 0)
    assert d.shape == (30 * 40, 3)
    assert d[1, 0] > d[0, 0]  # next pixel in the row is further right
    assert d[40, 1] < d[0, 1]  # next row is further down (OpenGL: +Y up)


def test_distortion_round_trip():
    dist = torch.tensor([[0.12, -0.08, 0.004, -0.003, 0.02]]).expand(200, 5)
    xy = (torch.rand(200, 2) - 0.5) * 1.2
    assert torch.allclose(undistort(distort(xy, dist), dist), xy, atol=1e-6)


def test_ray_aabb_hits_and_misses():
    aabb = torch.tensor([[-1.0, -1, -1], [1, 1, 1]])
    o = torch.tensor([[0.0, 0, 5], [3.0, 3, 5], [0.0, 0, 0]])
    d = torch.tensor([[0.0, 0, -1], [0.0, 0, -1], [1.0, 0, 0]])
    tn, tf = ray_aabb(o, d, aabb)
    assert math.isclose(tn[0], 4.0, abs_tol=1e-6) and math.isclose(tf[0], 6.0, abs_tol=1e-6)
    assert tf[1] <= tn[1]  # miss
    assert tn[2] == 0.0 and math.isclose(tf[2], 1.0, abs_tol=1e-6)  # origin inside: near clamps at 0
