"""Procedural furniture: 10 shape classes named after ModelNet10, each built from parametric parts.

Every class draws its proportions, its part counts (legs or a pedestal, armrests, drawers, pillows, feet ...) and
which optional parts it has from a ``numpy.random.Generator``; the parts (boxes, cylinders, ellipsoids) are merged
into one watertight mesh by a boolean union (trimesh's ``manifold`` engine, manifold3d), then slightly deformed
(anisotropic scale, shear, taper and a smooth sinusoidal warp). Axes: z up, x the long side, the "front" at -y
(ModelNet's alignment). Units are roughly metres; :func:`make_shape` leaves normalisation to the reader.
"""
from __future__ import annotations

import math

import numpy as np

CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")


def _tm():
    from nfkit.datasets.shape_files import trimesh_module

    return trimesh_module()


def box(lo, hi):
    """Axis-aligned box between corners ``lo`` and ``hi`` (3 floats each)."""
    return _tm().creation.box(bounds=np.array([lo, hi], float))


def cyl(centre, radius: float, height: float, axis: str = "z", sections: int = 20):
    """Cylinder of ``radius`` and ``height`` centred on ``centre``, along ``axis`` (x, y or z)."""
    tm = _tm()
    m = tm.creation.cylinder(radius=radius, height=height, sections=sections)
    if axis != "z":
        rot = tm.transformations.rotation_matrix(math.pi / 2, [0, 1, 0] if axis == "x" else [1, 0, 0])
        m.apply_transform(rot)
    m.apply_translation(centre)
    return m


def ellipsoid(centre, radii):
    m = _tm().creation.icosphere(subdivisions=2)
    m.apply_scale(np.asarray(radii, float))
    m.apply_translation(centre)
    return m


def legs(rng, x: float, y: float, h: float, t: float, round_: bool, z0: float = 0.0) -> list:
    """Four legs of thickness ``t`` and height ``h`` at (+-x, +-y), from z0 up."""
    out = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = sx * x, sy * y
            if round_:
                out.append(cyl((cx, cy, z0 + h / 2), t / 2, h))
            else:
                out.append(box((cx - t / 2, cy - t / 2, z0), (cx + t / 2, cy + t / 2, z0 + h)))
    return out


def drawers(rng, x0, x1, z0, z1, y_front, rows: int, cols: int, gap: float = 0.02, depth: float = 0.02) -> list:
    """Drawer fronts protruding ``depth`` in -y from the face y = y_front, a rows x cols grid in [x0,x1] x [z0,z1]."""
    out = []
    w, h = (x1 - x0) / cols, (z1 - z0) / rows
    for i in range(rows):
        for j in range(cols):
            lo = (x0 + j * w + gap / 2, y_front - depth, z0 + i * h + gap / 2)
            hi = (x0 + (j + 1) * w - gap / 2, y_front + 0.001, z0 + (i + 1) * h - gap / 2)
            out.append(box(lo, hi))
    return out


def bathtub(rng) -> list:
    L, W, H, t = rng.uniform(1.4, 1.9), rng.uniform(0.65, 0.9), rng.uniform(0.42, 0.6), rng.uniform(0.05, 0.1)
    feet = rng.random() < 0.4
    z0 = rng.uniform(0.08, 0.15) if feet else 0.0
    outer = box((-L / 2, -W / 2, z0), (L / 2, W / 2, z0 + H))
    inner = box((-L / 2 + t, -W / 2 + t, z0 + t), (L / 2 - t, W / 2 - t, z0 + H + 0.1))
    tub = _tm().boolean.difference([outer, inner], engine="manifold")
    parts = [tub]
    if feet:
        parts += [ellipsoid((sx * (L / 2 - 0.15), sy * (W / 2 - 0.1), z0 / 2 + 0.01), (0.06, 0.06, z0 / 2 + 0.02))
                  for sx in (-1, 1) for sy in (-1, 1)]
    if rng.random() < 0.3:  # a rim
        parts.append(box((-L / 2 - 0.03, -W / 2 - 0.03, z0 + H - 0.04), (-L / 2 + t, W / 2 + 0.03, z0 + H)))
    return parts


def bed(rng) -> list:
    L, W = rng.uniform(1.9, 2.2), rng.uniform(0.9, 1.9)
    leg_h, base_t, matt_t = rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.2), rng.uniform(0.15, 0.3)
    parts = legs(rng, L / 2 - 0.05, W / 2 - 0.05, leg_h + 0.01, 0.07, rng.random() < 0.3)
    parts.append(box((-L / 2, -W / 2, leg_h), (L / 2, W / 2, leg_h + base_t)))
    top = leg_h + base_t + matt_t
    parts.append(box((-L / 2 + 0.03, -W / 2 + 0.02, leg_h + base_t - 0.01), (L / 2 - 0.02, W / 2 - 0.02, top)))
    hb_t, hb_h = rng.uniform(0.05, 0.1), rng.uniform(0.8, 1.3)
    parts.append(box((-L / 2 - hb_t, -W / 2, 0), (-L / 2 + 0.01, W / 2, hb_h)))
    if rng.random() < 0.5:
        parts.append(box((L / 2 - 0.01, -W / 2, 0), (L / 2 + hb_t, W / 2, rng.uniform(0.4, 0.7))))
    n_pillows = rng.integers(0, 3) if W > 1.3 else rng.integers(0, 2)
    for k in range(n_pillows):
        cy = 0.0 if n_pillows == 1 else (-1) ** k * W / 4
        parts.append(ellipsoid((-L / 2 + 0.3, cy, top + 0.04), (0.18, min(0.3, W / 4), 0.07)))
    return parts


def chair(rng) -> list:
    w, d, h, st = rng.uniform(0.4, 0.55), rng.uniform(0.4, 0.55), rng.uniform(0.4, 0.5), rng.uniform(0.03, 0.08)
    tm = _tm()
    parts = [box((-w / 2, -d / 2, h - st), (w / 2, d / 2, h))]
    if rng.random() < 0.2:  # office chair: column and a star base
        parts.append(cyl((0, 0, (h - st) / 2 + 0.03), 0.03, h - st))
        for k in range(5):
            arm = box((0, -0.02, 0.02), (0.3, 0.02, 0.06))
            arm.apply_transform(tm.transformations.rotation_matrix(2 * math.pi * k / 5, [0, 0, 1]))
            parts.append(arm)
    else:
        t = rng.uniform(0.03, 0.05)
        parts += legs(rng, w / 2 - t, d / 2 - t, h - st + 0.005, t, rng.random() < 0.4)
    bt, bh = rng.uniform(0.03, 0.06), rng.uniform(0.35, 0.6)
    back = box((-w / 2, d / 2 - bt, h - 0.01), (w / 2, d / 2, h + bh))
    tilt = math.radians(rng.uniform(0, 12))
    back.apply_transform(tm.transformations.rotation_matrix(-tilt, [1, 0, 0], point=(0, d / 2, h)))
    parts.append(back)
    if rng.random() < 0.35:
        ah = rng.uniform(0.18, 0.25)
        for sx in (-1, 1):
            parts.append(box((sx * w / 2 - 0.03, -d / 2 + 0.05, h + ah - 0.03), (sx * w / 2 + 0.03, d / 2, h + ah)))
            parts.append(box((sx * w / 2 - 0.02, -d / 2 + 0.06, h - 0.01), (sx * w / 2 + 0.02, -d / 2 + 0.1, h + ah)))
    return parts


def desk(rng) -> list:
    W, D, H, t = rng.uniform(1.0, 1.6), rng.uniform(0.5, 0.8), rng.uniform(0.7, 0.78), rng.uniform(0.03, 0.05)
    parts = [box((-W / 2, -D / 2, H - t), (W / 2, D / 2, H))]
    n_ped = rng.integers(0, 3)
    pw = rng.uniform(0.35, 0.45)
    sides = [] if n_ped == 0 else ([rng.choice([-1, 1])] if n_ped == 1 else [-1, 1])
    for s in (-1, 1):
        if s in sides:  # a drawer pedestal
            x0, x1 = (W / 2 - pw, W / 2) if s > 0 else (-W / 2, -W / 2 + pw)
            parts.append(box((x0, -D / 2 + 0.02, 0), (x1, D / 2, H - t + 0.005)))
            parts += drawers(rng, x0, x1, 0.05, H - t - 0.02, -D / 2 + 0.02, int(rng.integers(2, 5)), 1)
        elif rng.random() < 0.5:  # a side panel
            x = s * (W / 2 - 0.025)
            parts.append(box((x - 0.025, -D / 2, 0), (x + 0.025, D / 2, H - t + 0.005)))
        else:  # two legs
            for sy in (-1, 1):
                cx, cy = s * (W / 2 - 0.04), sy * (D / 2 - 0.04)
                parts.append(box((cx - 0.025, cy - 0.025, 0), (cx + 0.025, cy + 0.025, H - t + 0.005)))
    if rng.random() < 0.5:  # modesty panel at the back
        parts.append(box((-W / 2 + 0.05, D / 2 - 0.04, H * 0.35), (W / 2 - 0.05, D / 2 - 0.02, H - t + 0.005)))
    return parts


def dresser(rng) -> list:
    W, D, H = rng.uniform(0.8, 1.6), rng.uniform(0.4, 0.55), rng.uniform(0.7, 1.2)
    feet = rng.random() < 0.5
    z0 = rng.uniform(0.05, 0.12) if feet else 0.0
    parts = [box((-W / 2, -D / 2, z0), (W / 2, D / 2, H))]
    if feet:
        parts += legs(rng, W / 2 - 0.05, D / 2 - 0.05, z0 + 0.01, 0.06, rng.random() < 0.5)
    if rng.random() < 0.6:  # overhanging top
        parts.append(box((-W / 2 - 0.02, -D / 2 - 0.03, H - 0.005), (W / 2 + 0.02, D / 2, H + 0.03)))
    cols = 1 if W < 1.1 else int(rng.integers(1, 3))
    parts += drawers(rng, -W / 2 + 0.03, W / 2 - 0.03, z0 + 0.04, H - 0.04, -D / 2, int(rng.integers(3, 7)), cols)
    return parts


def monitor(rng) -> list:
    W = rng.uniform(0.45, 0.7)
    Hs, t = W * rng.uniform(0.55, 0.65), rng.uniform(0.02, 0.05)
    neck_h = rng.uniform(0.08, 0.2)
    bw, bd = rng.uniform(0.18, 0.3), rng.uniform(0.14, 0.22)
    if rng.random() < 0.5:
        parts = [box((-bw / 2, -bd / 2, 0), (bw / 2, bd / 2, 0.02))]
    else:
        parts = [cyl((0, 0, 0.01), bd / 2 + 0.02, 0.02)]
    parts.append(box((-0.03, -0.04, 0.01), (0.03, 0.02, neck_h + 0.05)))
    z = neck_h
    parts.append(box((-W / 2, -t / 2 - 0.03, z), (W / 2, t / 2 - 0.03, z + Hs)))
    if rng.random() < 0.5:  # a bulging back
        parts.append(box((-W / 3, t / 2 - 0.035, z + Hs * 0.2), (W / 3, t / 2 + 0.03, z + Hs * 0.8)))
    return parts


def night_stand(rng) -> list:
    W, D, H = rng.uniform(0.4, 0.6), rng.uniform(0.35, 0.5), rng.uniform(0.45, 0.7)
    on_legs = rng.random() < 0.5
    z0 = rng.uniform(0.1, 0.2) if on_legs else 0.0
    body = box((-W / 2, -D / 2, z0), (W / 2, D / 2, H))
    n_dr = int(rng.integers(1, 4))
    shelf = rng.random() < 0.4
    if shelf:  # an open shelf in the lower part
        hole = box((-W / 2 + 0.03, -D / 2 - 0.1, z0 + 0.04), (W / 2 - 0.03, D / 2 - 0.03, z0 + (H - z0) * 0.45))
        body = _tm().boolean.difference([body, hole], engine="manifold")
    parts = [body]
    if on_legs:
        parts += legs(rng, W / 2 - 0.03, D / 2 - 0.03, z0 + 0.01, 0.04, rng.random() < 0.5)
    zd = z0 + (H - z0) * (0.5 if shelf else 0.05)
    parts += drawers(rng, -W / 2 + 0.02, W / 2 - 0.02, zd, H - 0.03, -D / 2, n_dr, 1)
    if rng.random() < 0.5:
        parts.append(box((-W / 2 - 0.02, -D / 2 - 0.02, H - 0.005), (W / 2 + 0.02, D / 2 + 0.01, H + 0.025)))
    return parts


def sofa(rng) -> list:
    L, D, sh = rng.uniform(1.5, 2.4), rng.uniform(0.8, 1.0), rng.uniform(0.35, 0.45)
    feet = rng.random() < 0.6
    z0 = rng.uniform(0.05, 0.12) if feet else 0.0
    bh, bt = rng.uniform(0.7, 0.95), rng.uniform(0.15, 0.25)
    parts = [box((-L / 2, -D / 2, z0), (L / 2, D / 2, sh)), box((-L / 2, D / 2 - bt, z0), (L / 2, D / 2, bh))]
    if feet:
        parts += legs(rng, L / 2 - 0.06, D / 2 - 0.06, z0 + 0.01, 0.05, rng.random() < 0.5)
    arm_w = rng.uniform(0.1, 0.25)
    if rng.random() < 0.85:
        ah = rng.uniform(0.55, 0.7)
        for s in (-1, 1):
            x0, x1 = (L / 2 - arm_w, L / 2) if s > 0 else (-L / 2, -L / 2 + arm_w)
            parts.append(box((x0, -D / 2, z0), (x1, D / 2, ah)))
    n_c = int(rng.integers(0, 4))
    inner = L - 2 * arm_w
    for k in range(n_c):
        x0 = -inner / 2 + k * inner / n_c
        parts.append(box((x0 + 0.01, -D / 2 + 0.02, sh - 0.01), (x0 + inner / n_c - 0.01, D / 2 - bt, sh + 0.1)))
    return parts


def table(rng) -> list:
    H, t = rng.uniform(0.7, 0.78), rng.uniform(0.03, 0.06)
    if rng.random() < 0.6:
        W, D = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0)
        parts = [box((-W / 2, -D / 2, H - t), (W / 2, D / 2, H))]
        lt = rng.uniform(0.04, 0.07)
        parts += legs(rng, W / 2 - lt, D / 2 - lt, H - t + 0.005, lt, rng.random() < 0.4)
        if rng.random() < 0.4:  # apron
            parts.append(box((-W / 2 + lt, -D / 2 + lt, H - t - 0.08), (W / 2 - lt, D / 2 - lt, H - t + 0.005)))
    else:
        r = rng.uniform(0.4, 0.6)
        parts = [cyl((0, 0, H - t / 2), r, t, sections=32), cyl((0, 0, H / 2), rng.uniform(0.04, 0.08), H)]
        if rng.random() < 0.5:
            parts.append(cyl((0, 0, 0.015), r * rng.uniform(0.4, 0.6), 0.03, sections=32))
        else:
            parts += [box((-r * 0.5, -0.03, 0), (r * 0.5, 0.03, 0.05)), box((-0.03, -r * 0.5, 0), (0.03, r * 0.5, 0.05))]
    return parts


def toilet(rng) -> list:
    bz = rng.uniform(0.32, 0.4)
    rx, ry, rz = rng.uniform(0.2, 0.26), rng.uniform(0.16, 0.2), rng.uniform(0.1, 0.14)
    parts = [cyl((0.02, 0, bz / 2), rng.uniform(0.11, 0.15), bz), ellipsoid((0.05, 0, bz), (rx, ry, rz))]
    seat = cyl((0, 0, 0), 1.0, 0.03, sections=32)
    seat.apply_scale([rx * 1.05, ry * 1.05, 1.0])
    seat.apply_translation([0.05, 0, bz + rz * 0.7])
    parts.append(seat)
    tw, td, th = rng.uniform(0.35, 0.5), rng.uniform(0.14, 0.22), rng.uniform(0.3, 0.45)
    tx = 0.05 - rx - td / 2 + 0.04
    tz = bz + rng.uniform(-0.05, 0.05)
    parts.append(box((tx - td / 2, -tw / 2, tz), (tx + td / 2, tw / 2, tz + th)))
    parts.append(box((tx + td / 2 - 0.01, -0.06, bz * 0.6), (0.05 - rx * 0.5, 0.06, tz + 0.05)))
    if rng.random() < 0.5:  # tank lid
        parts.append(box((tx - td / 2 - 0.01, -tw / 2 - 0.01, tz + th), (tx + td / 2 + 0.01, tw / 2 + 0.01, tz + th + 0.03)))
    return parts


BUILDERS = {"bathtub": bathtub, "bed": bed, "chair": chair, "desk": desk, "dresser": dresser, "monitor": monitor,
            "night_stand": night_stand, "sofa": sofa, "table": table, "toilet": toilet}


def deform(vertices: np.ndarray, rng, amount: float = 1.0) -> np.ndarray:
    """Small deformation of [V, 3] vertices: anisotropic scale (±10 %), shear (≤ 5 %), taper along z (≤ 10 %) and a
    smooth sinusoidal warp of ~1.5 % of the shape's size."""
    v = vertices - vertices.mean(0)
    size = float(np.ptp(vertices, 0).max())
    v = v * (1 + amount * rng.uniform(-0.1, 0.1, 3))
    shear = np.eye(3)
    shear[0, 2], shear[1, 2] = amount * rng.uniform(-0.05, 0.05, 2)
    v = v @ shear.T
    zn = v[:, 2] / max(size, 1e-9)
    v[:, :2] *= (1 + amount * rng.uniform(-0.1, 0.1) * zn)[:, None]
    freq = rng.normal(0, 2.0, (3, 3)) / size
    phase = rng.uniform(0, 2 * math.pi, 3)
    v += amount * 0.015 * size * np.sin(v @ freq.T + phase)
    return v


def make_shape(name: str, rng):
    """One random shape of class ``name``: a watertight trimesh (z up), parts merged and deformed."""
    tm = _tm()
    parts = BUILDERS[name](rng)
    mesh = tm.boolean.union(parts, engine="manifold") if len(parts) > 1 else parts[0]
    mesh = tm.Trimesh(deform(np.asarray(mesh.vertices), rng), np.asarray(mesh.faces), process=False)
    if mesh.volume < 0:
        mesh.invert()
    return mesh
