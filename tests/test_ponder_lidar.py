"""nfkit ponder's real LiDAR arm: PLY / LAS readers (synthetic files), splat depth, and CGAL's data when present."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from nfkit.apps.ponder.lidar import (find_cgal_data, lidar_splits, read_las_xyz, read_ply_vertices, splat_frames,
                                     tile_scenes)
from nfkit.errors import DatasetError


def test_read_ply_binary_and_ascii():
    pts = np.array([(1.5, -2.0, 3.25, 7, 0), (0.0, 1.0, 2.0, 255, -1)],
                   dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("label", "<i4")])
    head = ("ply\nformat {}\nelement vertex 2\nproperty double x\nproperty double y\nproperty double z\n"
            "property uchar red\nproperty int label\nend_header\n")
    v = read_ply_vertices(head.format("binary_little_endian 1.0").encode() + pts.tobytes())
    assert v.tolist() == pts.tolist()
    body = "1.5 -2 3.25 7 0\n0 1 2 255 -1\n"
    v = read_ply_vertices((head.format("ascii 1.0") + body).encode())
    assert v["label"].tolist() == [0, -1] and v["z"].tolist() == [3.25, 2.0]
    with pytest.raises(DatasetError, match="truncated"):
        read_ply_vertices(head.format("binary_little_endian 1.0").encode() + pts.tobytes()[:-3])


def test_read_las_scaled_coordinates():
    hdr = bytearray(227)
    hdr[:4] = b"LASF"
    hdr[24], hdr[25] = 1, 2
    struct.pack_into("<H", hdr, 94, 227)
    struct.pack_into("<I", hdr, 96, 227)
    hdr[104] = 0
    struct.pack_into("<H", hdr, 105, 20)
    struct.pack_into("<I", hdr, 107, 2)
    struct.pack_into("<3d", hdr, 131, 0.01, 0.01, 0.001)
    struct.pack_into("<3d", hdr, 155, 1000.0, 2000.0, 10.0)
    recs = b"".join(struct.pack("<3i", *xyz) + bytes(8) for xyz in ((100, -200, 5000), (0, 1, -1)))
    xyz = read_las_xyz(bytes(hdr) + recs)
    np.testing.assert_allclose(xyz, [[1001.0, 1998.0, 15.0], [1000.0, 2000.01, 9.999]])


def test_splat_depth_of_a_plane():
    g = np.random.default_rng(0)
    plane = np.stack([g.uniform(-0.5, 0.5, 40000), g.uniform(-0.5, 0.5, 40000), np.full(40000, -0.5)], -1)
    depth, c2w, intr = splat_frames(plane, g, views=2)
    for d, m, k in zip(depth, c2w, intr):
        v, u = np.nonzero(d > 0)
        assert len(v) > 0.3 * d.size
        x = (u + 0.5 - k[2]) / k[0] * d[v, u]
        y = -(v + 0.5 - k[3]) / k[1] * d[v, u]
        world = np.stack([x, y, -d[v, u]], -1) @ m[:3, :3].T + m[:3, 3]
        assert np.median(np.abs(world[:, 2] + 0.5)) < 0.02  # 3x3 splats, nearest wins: within ~half a voxel (1/32)


def test_tiles_are_normalised():
    g = np.random.default_rng(1)
    xyz = np.stack([g.uniform(0, 90, 20000), g.uniform(0, 60, 20000), g.uniform(70, 80, 20000)], -1)
    lab = g.integers(-1, 3, 20000)
    scenes = tile_scenes(xyz, lab, 30.0, 512, g)
    assert len(scenes) == 5 * 3
    for s in scenes:
        p = s["points"]
        assert p.shape == (512, 3) and np.abs(p[:, :2]).max() <= 0.5
        assert -0.5 <= p[:, 2].min() and p[:, 2].max() <= 0.0
        assert set(np.unique(s["labels"]).tolist()) <= {0, 1, 2, 255}


def test_cgal_b9_training_when_installed():
    data = find_cgal_data()
    if data is None:
        pytest.skip("libcgal-demo is not installed (apt-get install -y libcgal-demo): no b9_training.ply / urban.las")
    xyz, lab = data["b9"]
    assert xyz.shape == (22300, 3) and set(np.unique(lab).tolist()) == {-1, 0, 1, 2}
    assert np.isfinite(data["urban"]).all() and len(data["urban"]) > 1000
    sp = lidar_splits(data, n_points=512)
    assert sp["train"]["points"].shape[0] > 0 and sp["test"]["points"].shape[0] > 0
    assert (sp["train"]["labels"] < 3).any() and (sp["test"]["labels"] < 3).any()
    assert (sp["pretrain"]["depth"] > 0).float().mean() > 0.2
