"""Generates nfkit's small embedded demo capture procedurally (no third-party data).

Usage: ``python assets/make_demo.py [--out assets/demo] [--frames 60] [--size 128] [--seed 0]``

Writes, via a temporary directory renamed into place (an existing OUT is replaced):

* ``OUT/images/frame_00000.png`` ...: RGBA renders, straight (non-premultiplied) alpha, 0 where a ray
  misses everything and 1 on objects; 2x2 supersampling gives anti-aliased, fractional-alpha silhouettes.
* ``OUT/transforms.json``: nerfstudio / instant-ngp style ("camera_model": "OPENCV", fl_x, fl_y, cx, cy,
  w, h, zero distortion, "aabb_scale": 1, frames with 4x4 camera-to-world "transform_matrix").
* ``OUT/orbit.mp4``: the same frames composited on white (15 fps, libx264).

Conventions: world +Z up; cameras are OpenGL-style (+X right, +Y up, looking down -Z); pixel (u, v) has
its centre at (u + 0.5, v + 0.5) with v growing downwards; cx = cy = size / 2; horizontal/vertical field
of view 40 degrees.  Cameras sit on a sphere of radius 4 around the origin and look at it.  The path is a
closed spiral over the upper hemisphere: azimuth makes 2 turns while elevation swings once, sinusoidally,
between 10 and 60 degrees, so consecutive frames are close and every frame, in particular every 8th one
(held out as a test view by the loaders), lies between its neighbours, which are training views; the
swing's phase keeps the path's two self-crossings away from those held-out frames.

Scene (inside [-0.9, 0.9]^3), ray traced analytically and vectorised in numpy, Lambertian shading from a
fixed directional light plus ambient, with hard shadows, baked into the colour:

* pedestal: box [-0.8, 0.8]^2 x [-0.9, -0.55], cream / terracotta checkerboard with 0.15-unit cells;
* big sphere (r 0.36): blue / white diagonal stripes, plus a mild Blinn-Phong highlight (the only
  view-dependent effect);
* cylinder (r 0.2, z up to 0.42): smooth hue gradient around and along it, with thin dark rings every 0.1;
* sphere on the cylinder (r 0.22): multi-octave value noise mapped to a green-yellow palette;
* small sphere (r 0.15): marble (sine bands perturbed by value noise);
* torus (R 0.26, r 0.08, tilted 20 degrees), sphere traced on its SDF: 16 x 6 checker in its angles.

``--seed`` only changes the value-noise lattice; the output is deterministic for a given set of arguments.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

RADIUS, FOV_DEG = 4.0, 40.0
LIGHT = np.array([-0.45, -0.35, 0.82]) / np.linalg.norm([-0.45, -0.35, 0.82])
AMBIENT, EPS, INF = 0.28, 1e-4, np.inf
TOP = -0.55  # pedestal top


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _sphere_span(o, d, c, r):
    """Entry and exit distances of rays (o, d) through the sphere (c, r); NaN on a miss."""
    oc = o - c
    b = np.einsum("ij,ij->i", oc, d)
    with np.errstate(invalid="ignore"):
        s = np.sqrt(b * b - (np.einsum("ij,ij->i", oc, oc) - r * r))
    return -b - s, -b + s


class Noise:
    """3D value noise on an integer lattice (hashed permutation table), smoothstep-trilinear, in [0, 1]."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.perm, self.vals = rng.permutation(256), rng.random(256)

    def __call__(self, p):
        i = np.floor(p).astype(np.int64)
        f, out, P = p - i, 0.0, self.perm
        w = f * f * (3 - 2 * f)
        for dx, dy, dz in itertools.product((0, 1), repeat=3):
            h = P[(P[(P[(i[:, 0] + dx) & 255] + i[:, 1] + dy) & 255] + i[:, 2] + dz) & 255]
            wt = np.prod(np.where(np.array([dx, dy, dz], bool), w, 1 - w), axis=1)
            out = out + wt * self.vals[h]
        return out

    def fbm(self, p, octaves=3):
        return sum(0.5 ** k * self(p * 2 ** k + 17.3 * k) for k in range(octaves)) / (2 - 0.5 ** (octaves - 1))


def _mix(a, b, t):
    return np.asarray(a) * (1 - t[:, None]) + np.asarray(b) * t[:, None]


# ---- primitives: hit(o, d) -> t (inf on a miss); surface(p) -> (normal, albedo) ---------------------------

class Sphere:
    def __init__(self, c, r, texture, spec=0.0):
        self.c, self.r, self.texture, self.spec = np.asarray(c, float), r, texture, spec

    def hit(self, o, d):
        t0, t1 = _sphere_span(o, d, self.c, self.r)
        t = np.where(t0 > EPS, t0, t1)
        return np.where(t > EPS, t, INF)  # NaN (miss) compares False

    def surface(self, p):
        q = (p - self.c) / self.r
        return _unit(q), self.texture(q)


class Box:
    def __init__(self, lo, hi, texture):
        self.lo, self.hi, self.texture = np.asarray(lo, float), np.asarray(hi, float), texture

    def hit(self, o, d):
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(d == 0, 1e-12, d)
            t1, t2 = (self.lo - o) * inv, (self.hi - o) * inv
        tn, tf = np.minimum(t1, t2).max(1), np.maximum(t1, t2).min(1)
        t = np.where(tn > EPS, tn, tf)
        return np.where((tn <= tf) & (t > EPS), t, INF)

    def surface(self, p):
        q = (2 * p - self.lo - self.hi) / (self.hi - self.lo)  # in [-1, 1]^3; +-1 on the hit face
        axis, rows = np.abs(q).argmax(1), np.arange(len(p))
        n = np.zeros_like(p)
        n[rows, axis] = np.sign(q[rows, axis])
        return n, self.texture(p, axis)


class Cylinder:
    """Capped cylinder with a vertical axis through (x, y) = c, z in [z0, z1]."""

    def __init__(self, c, r, z0, z1, texture):
        self.c, self.r, self.z0, self.z1, self.texture = np.asarray(c, float), r, z0, z1, texture

    def hit(self, o, d):
        ox, oy, dx, dy = o[:, 0] - self.c[0], o[:, 1] - self.c[1], d[:, 0], d[:, 1]
        a, b = dx * dx + dy * dy, ox * dx + oy * dy
        disc = b * b - a * (ox * ox + oy * oy - self.r ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = (-b - np.sqrt(np.maximum(disc, 0))) / np.where(a == 0, 1e-12, a)
            z = o[:, 2] + ts * d[:, 2]
            best = np.where((disc >= 0) & (ts > EPS) & (z >= self.z0) & (z <= self.z1), ts, INF)
            for zc in (self.z0, self.z1):
                tc = (zc - o[:, 2]) / np.where(d[:, 2] == 0, 1e-12, d[:, 2])
                x, y = ox + tc * dx, oy + tc * dy
                best = np.where((tc > EPS) & (x * x + y * y <= self.r ** 2) & (tc < best), tc, best)
        return best

    def surface(self, p):
        rad = np.concatenate([p[:, :2] - self.c, np.zeros((len(p), 1))], 1)
        n, cap = _unit(rad), np.abs(p[:, 2] - self.z1) < 1e-4
        n[cap], n[np.abs(p[:, 2] - self.z0) < 1e-4] = (0, 0, 1), (0, 0, -1)
        return n, self.texture(p, rad, cap)


class Torus:
    """Torus (major radius R, minor r) centred at c whose symmetry axis is the unit vector ``axis``."""

    def __init__(self, c, axis, R, r, texture, iters=64):
        self.c, self.R, self.r, self.texture, self.iters = np.asarray(c, float), R, r, texture, iters
        a = _unit(np.asarray(axis, float))
        e1 = _unit(np.cross(a, [0.0, 1.0, 0.0]))
        self.rot = np.stack([e1, np.cross(a, e1), a])  # rows: local x, y, z (= axis) in world coords

    def sdf(self, q):
        return np.hypot(np.hypot(q[:, 0], q[:, 1]) - self.R, q[:, 2]) - self.r

    def hit(self, o, d):
        out = np.full(len(o), INF)
        t0, t1 = _sphere_span(o, d, self.c, self.R + self.r + 1e-3)  # bounding sphere
        idx = np.nonzero(t1 > EPS)[0]
        t, t_exit = np.maximum(t0[idx], 2 * EPS), t1[idx]
        oo, dd = (o[idx] - self.c) @ self.rot.T, d[idx] @ self.rot.T
        for _ in range(self.iters):
            dist = self.sdf(oo + t[:, None] * dd)
            t = t + np.where(t < t_exit, dist, 0.0)
        ok = (np.abs(self.sdf(oo + t[:, None] * dd)) < 2e-3) & (t < t_exit)
        out[idx[ok]] = t[ok]
        return out

    def surface(self, p):
        q = (p - self.c) @ self.rot.T
        rho = np.maximum(np.hypot(q[:, 0], q[:, 1]), 1e-9)
        n_loc = q - self.R * np.stack([q[:, 0] / rho, q[:, 1] / rho, np.zeros_like(rho)], 1)
        phi, theta = np.arctan2(q[:, 1], q[:, 0]), np.arctan2(q[:, 2], rho - self.R)
        return _unit(n_loc @ self.rot), self.texture(phi, theta)


# ---- textures --------------------------------------------------------------------------------------------

def build_scene(seed):
    noise = Noise(seed)
    cell = 0.15

    def checker(p, axis):  # 2D checker in the face's tangential coordinates (robust on the faces)
        k = np.floor(p / cell).astype(np.int64)
        k[np.arange(len(p)), axis] = 0
        return _mix((0.93, 0.87, 0.74), (0.72, 0.33, 0.2), (k.sum(1) & 1).astype(float))

    def stripes(q):
        s = np.sin(q @ np.array([0.55, 0.35, 0.76]) * 2 * math.pi * 4.5)
        return _mix((0.12, 0.3, 0.78), (0.95, 0.95, 0.97), np.clip(s * 4 + 0.5, 0, 1))

    def gradient(p, rad, cap):
        h = np.clip((p[:, 2] - TOP) / 0.97, 0, 1) + 0.12 * rad[:, 0] / 0.2  # periodic around the axis
        rgb = 0.55 + 0.4 * np.cos(2 * math.pi * (h[:, None] + np.array([0.0, 0.33, 0.67])))
        ring = (np.abs(((p[:, 2] - TOP) / 0.1) % 1 - 0.5) > 0.4) & ~cap
        rgb[ring] *= 0.25
        return rgb

    def fbm_palette(q):
        t = np.clip((noise.fbm(q * 3.0 + 5.0, octaves=4) - 0.3) / 0.4, 0, 1)
        return _mix((0.1, 0.35, 0.12), (0.95, 0.85, 0.2), t)

    def marble(q):
        v = 0.5 + 0.5 * np.sin(q[:, 0] * 14 + q[:, 2] * 6 + 6 * noise.fbm(q * 4, octaves=3))
        return _mix((0.35, 0.1, 0.45), (0.97, 0.92, 0.98), v)

    def torus_checker(phi, theta):
        k = np.floor(phi / (2 * math.pi) * 16) + np.floor(theta / (2 * math.pi) * 6)
        return _mix((0.95, 0.55, 0.1), (0.15, 0.15, 0.18), (k.astype(np.int64) & 1).astype(float))

    tilt, R, r = math.radians(20), 0.26, 0.08
    return [
        Box((-0.8, -0.8, -0.9), (0.8, 0.8, TOP), checker),
        Sphere((-0.35, -0.3, TOP + 0.36), 0.36, stripes, spec=0.35),
        Cylinder((0.38, 0.35), 0.2, TOP, 0.42, gradient),
        Sphere((0.38, 0.35, 0.42 + 0.2), 0.22, fbm_palette),
        Sphere((-0.42, 0.42, TOP + 0.15), 0.15, marble),
        Torus((0.38, -0.38, TOP + R * math.sin(tilt) + r), (math.sin(tilt), 0.0, math.cos(tilt)), R, r,
              torus_checker),
    ]


# ---- rendering -------------------------------------------------------------------------------------------

def trace(objs, o, d):
    ts = np.stack([ob.hit(o, d) for ob in objs])
    which = ts.argmin(0)
    return ts[which, np.arange(len(o))], which


def shade(objs, o, d):
    t, which = trace(objs, o, d)
    hit, rgb = np.isfinite(t), np.zeros((len(o), 3))
    idx = np.nonzero(hit)[0]
    p = o[idx] + t[idx, None] * d[idx]
    n, alb, spec = np.zeros_like(p), np.zeros_like(p), np.zeros(len(idx))
    for k, ob in enumerate(objs):
        m = which[idx] == k
        if m.any():
            n[m], alb[m] = ob.surface(p[m])
            spec[m] = getattr(ob, "spec", 0.0)
    ndl = np.clip(n @ LIGHT, 0, None)
    lit, vis = ndl > 0, np.ones(len(idx))
    sh_t, _ = trace(objs, p[lit] + 2e-3 * n[lit], np.broadcast_to(LIGHT, (int(lit.sum()), 3)).copy())
    vis[lit] = ~np.isfinite(sh_t)
    highlight = spec * vis * np.clip(np.einsum("ij,ij->i", n, _unit(LIGHT - d[idx])), 0, 1) ** 60
    rgb[idx] = alb * (AMBIENT + (1 - AMBIENT) * ndl * vis)[:, None] + highlight[:, None]
    return np.clip(rgb, 0, 1), hit


def elevation_phase(n):
    """Phase of the elevation swing that keeps the path's self-crossings (frames i and i + n/2 share an
    azimuth) far from the held-out frames, so no test view nearly duplicates a training view."""
    test, phis = np.arange(0, n, 8), np.linspace(0, math.pi, 360, endpoint=False)
    return float(phis[np.argmax([np.abs(np.sin(2 * math.pi * test / n + p)).min() for p in phis])])


def camera(i, n, phase):
    s = i / n
    az = 2 * 2 * math.pi * s
    el = math.radians(35 + 25 * math.sin(2 * math.pi * s + phase))
    pos = RADIUS * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    back = pos / np.linalg.norm(pos)  # camera +Z (it looks down -Z, at the origin)
    right = _unit(np.cross([0.0, 0.0, 1.0], back))
    c2w = np.eye(4)
    c2w[:3] = np.stack([right, np.cross(back, right), back, pos], 1)
    return c2w


def render(objs, c2w, size, focal, ss=2):
    g = (np.arange(size * ss) + 0.5) / ss  # sub-pixel sample positions, pixel centres at u + 0.5
    u, v = np.meshgrid(g, g)
    dirs = np.stack([(u - size / 2) / focal, -(v - size / 2) / focal, -np.ones_like(u)], -1).reshape(-1, 3)
    d = _unit(dirs @ c2w[:3, :3].T)
    rgb, hit = shade(objs, np.broadcast_to(c2w[:3, 3], d.shape).copy(), d)
    rgb = (rgb * hit[:, None]).reshape(size, ss, size, ss, 3).sum((1, 3))
    cnt = hit.reshape(size, ss, size, ss).sum((1, 3)).astype(float)
    rgb = rgb / np.maximum(cnt, 1)[..., None]
    return np.concatenate([rgb, (cnt / ss ** 2)[..., None]], -1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "demo"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.frames < 1 or a.size < 2 or a.size % 2:
        ap.error("--frames must be >= 1 and --size an even number >= 2")
    t0, out = time.perf_counter(), Path(a.out).resolve()
    tmp, old = (out.parent / f".{out.name}.{tag}-{os.getpid()}" for tag in ("tmp", "old"))
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    try:
        objs = build_scene(a.seed)
        focal = 0.5 * a.size / math.tan(math.radians(FOV_DEG) / 2)
        frames, video, phase = [], [], elevation_phase(a.frames)
        for i in range(a.frames):
            c2w = camera(i, a.frames, phase)
            rgba = render(objs, c2w, a.size, focal)
            name = f"images/frame_{i:05d}.png"
            iio.imwrite(tmp / name, np.round(rgba * 255).astype(np.uint8))
            comp = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
            video.append(np.round(comp * 255).astype(np.uint8))
            frames.append({"file_path": name, "transform_matrix": np.round(c2w, 8).tolist()})
        meta = {"camera_model": "OPENCV", "fl_x": focal, "fl_y": focal, "cx": a.size / 2, "cy": a.size / 2,
                "w": a.size, "h": a.size, "k1": 0, "k2": 0, "p1": 0, "p2": 0,
                "camera_angle_x": math.radians(FOV_DEG), "aabb_scale": 1, "frames": frames}
        (tmp / "transforms.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        iio.imwrite(tmp / "orbit.mp4", np.stack(video), fps=15, codec="libx264")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"make_demo: {a.frames} frames of {a.size}x{a.size} -> {out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
