"""Shared fixtures: a tiny synthetic capture written by the test itself (no external data); the torchrun command
line of the multi-process tests."""
import json
import math
import os
import socket
import sys
from pathlib import Path

import nfkit  # noqa: F401  (first: sets the OpenMP spin count before torch loads)
import numpy as np
import pytest


def look_at_c2w(eye: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world looking at the origin, world +Z up."""
    fwd = -eye / np.linalg.norm(eye)
    right = np.cross(fwd, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -fwd, eye
    return m


def write_sphere_capture(root: Path, n: int = 10, size: int = 16, radius: float = 0.6) -> Path:
    """nerfstudio transforms.json + RGBA PNGs of an analytically rendered coloured sphere."""
    import imageio.v3 as iio

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    f = 0.5 * size / math.tan(math.radians(20))
    frames = []
    for i in range(n):
        az, el = 2 * math.pi * i / n, math.radians(20 + 20 * (i % 3))
        eye = 4 * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        c2w = look_at_c2w(eye)
        v, u = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        d_cam = np.stack([(u + 0.5 - size / 2) / f, -(v + 0.5 - size / 2) / f, -np.ones_like(u, float)], -1)
        d = d_cam @ c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        b = (d * eye).sum(-1)
        disc = b * b - (eye @ eye - radius**2)
        hit = disc > 0
        t = -b - np.sqrt(np.maximum(disc, 0))
        p = eye + t[..., None] * d
        rgb = np.clip(0.5 + 0.5 * p / radius, 0, 1)
        img = np.zeros((size, size, 4))
        img[..., :3] = np.where(hit[..., None], rgb, 0)
        img[..., 3] = hit
        name = f"images/f{i:03d}.png"
        iio.imwrite(root / name, (img * 255).round().astype(np.uint8))
        frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
    meta = {"camera_model": "OPENCV", "fl_x": f, "fl_y": f, "cx": size / 2, "cy": size / 2, "w": size, "h": size,
            "aabb_scale": 1, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def sphere_capture(tmp_path) -> Path:
    return write_sphere_capture(tmp_path / "capture")


TINY_FIELD = ["--field-options", "n_levels=4", "log2_hashmap_size=12", "hidden=16", "max_resolution=64",
              "--samples-per-step", "4096", "--grid-resolution", "16", "--quiet"]


# One thread per rank: two ranks on the two cores of the reference machine.
TORCHRUN_ENV = {**os.environ, "NFKIT_THREADS_PER_RANK": "1", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(args: list[str], nproc: int = 2) -> list[str]:
    """``torchrun --nproc_per_node N -m nfkit.apps ARGS`` on loopback with a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
            "127.0.0.1", "--master_port", str(free_port()), "-m", "nfkit.apps"] + args


def interrupt_nth_call(monkeypatch, module, name: str, n: int = 2):
    """``module.name`` raises KeyboardInterrupt on its n-th call (a job killed mid-way); returns the real function
    (``monkeypatch.setattr(module, name, real)`` restores it)."""
    real, calls = getattr(module, name), []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(module, name, interrupted)
    return real
