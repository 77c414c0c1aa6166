"""nfkit wireframe (NEAT): 2-D line geometry, matching, evaluation, files, the CLI's bad input (fast tests)."""
import json
from pathlib import Path

import nfkit  # noqa: F401
import numpy as np
import pytest
import torch

from nfkit.apps.wireframe.evaluate import evaluate_wireframe, read_gt
from nfkit.apps.wireframe.lines2d import (ViewLines, junctions_from_segments, point_segment_distance,
                                          point_segment_distance_reference, read_hawp, support_pixels)
from nfkit.apps.wireframe.matching import match_points, match_segments, segment_distance_matrix
from nfkit.apps.wireframe.outputs import read_wireframe, write_wireframe

ABC = Path(__file__).resolve().parents[2] / "shared" / "data" / "abc_wireframe"


def test_point_segment_distance_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(200, 2, generator=g) * 50
    segs = torch.rand(30, 4, generator=g) * 50
    segs[3, 2:] = segs[3, :2]  # a degenerate segment (a point)
    d, t = point_segment_distance(p, segs)
    d_ref, t_ref = point_segment_distance_reference(p.double().numpy(), segs.double().numpy())
    np.testing.assert_allclose(d.numpy(), d_ref, atol=1e-3)
    ok = np.isfinite(t_ref) & (np.abs(t_ref) < 1e4)
    np.testing.assert_allclose(t.numpy()[ok], t_ref[ok], rtol=1e-4, atol=1e-4)


def test_support_pixels_match_brute_force():
    lines = ViewLines(np.array([[2.0, 3.0, 20.0, 9.0], [5.0, 18.0, 5.0, 4.0]], np.float32), np.ones(2, np.float32),
                      np.zeros((0, 2), np.float32))
    h, w, r = 24, 26, 2.0
    idx, lab = support_pixels(lines, h, w, r, chunk=100)
    want = {}
    for v in range(h):
        for u in range(w):
            d, t = point_segment_distance_reference(np.array([[u + 0.5, v + 0.5]]), lines.segments)
            d = np.where((t > 0) & (t < 1), d, np.inf)[0]
            if d.min() <= r:
                want[v * w + u] = int(np.argmin(d))
    assert dict(zip(idx.tolist(), lab.tolist())) == want
    assert len(want) > 20


def test_hungarian_junction_matching_recovers_a_permutation():
    rng = np.random.default_rng(1)
    gt = rng.random((12, 3))
    perm = rng.permutation(12)
    pred = gt[perm] + rng.normal(0, 1e-3, (12, 3))
    r, c, d = match_points(pred, gt)
    assert (c[np.argsort(r)] == perm).all() and d.max() < 1e-2
    # more predictions than ground truth: one-to-one, the extras unmatched
    r, c, _ = match_points(np.concatenate([pred, pred[:3] + 0.5]), gt)
    assert len(r) == 12 and len(set(c.tolist())) == 12 and r.max() < 12


def test_segment_distance_ignores_endpoint_order():
    a = np.array([[[0, 0, 0], [1, 0, 0]]], float)
    b = np.array([[[1, 0, 0], [0, 0.2, 0]]], float)
    assert segment_distance_matrix(a, b)[0, 0] == pytest.approx(0.1)
    r, c, d = match_segments(a, b)
    assert d[0] == pytest.approx(0.1)


def test_evaluation_abc_protocol():
    rng = np.random.default_rng(2)
    gj = rng.random((8, 3))
    ge = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5]])
    perfect = evaluate_wireframe(gj, ge, gj, ge)
    assert perfect["junctions"]["1%"]["f1"] == 1.0 and perfect["lines"]["1%"]["f1"] == 1.0
    moved = gj.copy()
    moved[0] += np.array([0.03, 0, 0]) * perfect["scale"]  # off by 3 % of the scale: counts at 5 %, not at 2 %
    ev = evaluate_wireframe(moved, ge[::-1, ::-1], gj, ge)
    assert ev["junctions"]["2%"]["recall"] == pytest.approx(7 / 8)
    assert ev["junctions"]["5%"]["recall"] == 1.0
    assert ev["lines"]["5%"]["f1"] == 1.0 and ev["lines"]["1%"]["precision"] == pytest.approx(3 / 5)
    extra = evaluate_wireframe(np.concatenate([gj, gj + 5]), ge, gj, ge)
    assert extra["junctions"]["1%"]["precision"] == 0.5 and extra["junctions"]["1%"]["recall"] == 1.0


def test_gt_frame_unit_cube(tmp_path):
    (tmp_path / "lines.json").write_text(json.dumps({"junctions": [[0, 0, 0], [10, 15, 6]], "lines": [[0, 1]]}))
    j, e = read_gt(tmp_path / "lines.json", "auto", camera_centres=np.array([[0, 0, 2.0]]))
    np.testing.assert_allclose(j, [[-1 / 3, -0.5, -0.2], [1 / 3, 0.5, 0.2]])
    j, _ = read_gt(tmp_path / "lines.json", "world")
    assert j.max() == 15


def test_lsd_style_junctions_cluster_endpoints():
    segs = np.array([[0, 0, 10, 0], [10.5, 0.5, 10, 10], [0.4, -0.3, 0, 10]], float)
    snapped, junctions = junctions_from_segments(segs, radius=1.5)
    assert len(junctions) == 4  # (0,0), (10,0) with (10.5,0.5), (10,10), (0,10)
    assert np.allclose(snapped[0, 2:], snapped[1, :2]) and np.allclose(snapped[0, :2], snapped[2, :2])


def test_hawp_reader_filters_scores_and_shifts_to_pixel_centres():
    path = ABC / "hawp" / "image_0000.json"
    if not path.is_file():
        pytest.skip(f"ABC data absent ({ABC})")
    raw = json.loads(path.read_text())
    lines, (h, w) = read_hawp(path)
    assert (h, w) == (512, 512)
    assert len(lines) == sum(s > 0.05 for s in raw["edges-weights"]) and (lines.scores > 0.05).all()
    a, b = raw["edges"][0]
    np.testing.assert_allclose(lines.segments[0], np.array(raw["vertices"][a] + raw["vertices"][b]) + 0.5, atol=1e-4)


def test_wireframe_files_round_trip(tmp_path):
    j = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.5]], float)
    e = np.array([[0, 1], [1, 2]])
    write_wireframe(tmp_path, j, e, views=[3, 4])
    j2, e2 = read_wireframe(tmp_path / "wireframe.json")
    np.testing.assert_allclose(j2, j)
    assert (e2 == e).all()
    o3d = pytest.importorskip("open3d")
    ls = o3d.io.read_line_set(str(tmp_path / "wireframe.ply"))
    np.testing.assert_allclose(np.asarray(ls.points), j, atol=1e-6)
    assert (np.asarray(ls.lines) == e).all()


def _blank_neat_scene(root: Path, n: int = 3, size: int = 24) -> Path:
    import imageio.v3 as iio

    (root / "images").mkdir(parents=True)
    k = np.tile(np.array([[30.0, 0, size / 2], [0, 30.0, size / 2], [0, 0, 1]]), (n, 1, 1))
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        ang = 2 * np.pi * i / n
        c = np.array([2 * np.cos(ang), 2 * np.sin(ang), 0.0])
        z = -c / np.linalg.norm(c)  # OpenCV: the camera looks along +z, at the origin
        x = np.cross([0, 0, 1.0], z)
        x /= np.linalg.norm(x)
        c2w[i, :3, :3] = np.stack([x, np.cross(z, x), z], 1)
        c2w[i, :3, 3] = c
        iio.imwrite(root / "images" / f"image_{i:04d}.png", np.zeros((size, size, 3), np.uint8))
    np.savez(root / "cameras.npz", intrinsics=k, extrinsics=c2w.astype(np.float32))
    return root


def test_scene_without_segments_is_one_line_exit_2(tmp_path, capsys):
    pytest.importorskip("cv2")  # no line files: the LSD detector runs (and finds nothing on black images)
    from nfkit.apps.cli import main

    data = _blank_neat_scene(tmp_path / "blank")
    rc = main(["wireframe", str(data), "--out", str(tmp_path / "out"), "--steps", "5", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    errors = [ln for ln in err if ln.startswith("nfkit: error:")]
    assert len(errors) == 1 and "no 2-D line segments" in errors[0], err
    assert not (tmp_path / "out" / "wireframe.json").exists()
