"""nfkit wireframe on a synthetic box with oracle 2-D wireframes (its true edges projected, clipped by ray casting):
the oracle itself, the classic baseline on it (fast), NEAT end to end (slow)."""
import nfkit  # noqa: F401
import numpy as np
import pytest
import torch

from nfkit.apps.wireframe.evaluate import evaluate_wireframe
from nfkit.apps.wireframe.oracle import oracle_lines, sharp_edges


@pytest.fixture(scope="module")
def box():
    trimesh = pytest.importorskip("trimesh")
    from nfkit.datasets.mesh_views import mesh_views

    views = mesh_views(trimesh.creation.box(extents=(1.0, 0.8, 0.6)), n_views=32, size=96, seed=0)
    junctions, edges = sharp_edges(views.mesh)
    lines = oracle_lines(views.mesh, views.scene.cameras, junctions, edges)
    return views, junctions, edges, lines


def test_box_has_8_corners_and_12_edges(box):
    _, junctions, edges, _ = box
    assert junctions.shape == (8, 3) and edges.shape == (12, 2)
    lengths = sorted(np.round(np.linalg.norm(junctions[edges[:, 0]] - junctions[edges[:, 1]], axis=1), 3))
    assert len(set(lengths)) == 3  # three edge lengths, four each


def test_oracle_segments_lie_on_visible_projected_edges(box):
    views, junctions, edges, lines = box
    from nfkit.apps.wireframe.classic import _cams_np, project

    cam = _cams_np(views.scene.cameras)
    for i in (0, 7, 19):
        ln = lines[i]
        assert 5 <= len(ln) <= 12 and 4 <= len(ln.junctions) <= 7  # a box shows 6-9 edges and 4-7 corners
        px, _ = project(cam, i, junctions)
        a, b = px[edges[:, 0]], px[edges[:, 1]]
        u = (b - a) / np.linalg.norm(b - a, axis=1, keepdims=True)
        n = np.stack([-u[:, 1], u[:, 0]], 1)
        for s in ln.segments:  # every oracle segment lies on (within 0.5 px of) some projected edge's line
            d = np.maximum(np.abs(((s[:2] - a) * n).sum(1)), np.abs(((s[2:] - a) * n).sum(1)))
            assert min(d) < 0.5


def test_classic_baseline_on_oracle_box(box):
    from nfkit.apps.wireframe.classic import classic_wireframe

    views, junctions, edges, lines = box
    wf, _ = classic_wireframe(views.scene, lines)
    ev = evaluate_wireframe(wf.junctions, wf.edges, junctions, edges)
    assert ev["lines"]["2%"]["recall"] >= 10 / 12, ev


@pytest.mark.slow
def test_neat_on_oracle_box_recovers_its_12_edges(box):
    from nfkit.apps.wireframe.config import WireframeConfig
    from nfkit.apps.wireframe.extract import extract_wireframe
    from nfkit.apps.wireframe.pipeline import train_model

    views, junctions, edges, lines = box
    cfg = WireframeConfig(steps=1200, progress=False)
    torch.set_num_threads(1)
    model = train_model(views.scene, lines, cfg)
    wf, _ = extract_wireframe(model.field, model.head, model.junctions, model.grid, model.opts, views.scene, lines,
                              cfg)
    ev = evaluate_wireframe(wf.junctions, wf.edges, junctions, edges)
    assert ev["lines"]["2%"]["recall"] == 1.0, ev
    assert ev["junctions"]["2%"]["recall"] == 1.0, ev


def test_cli_end_to_end_on_oracle_box_files(tmp_path):
    """``nfkit wireframe DATA --lines HAWP_DIR``: a short run writes every output in input coordinates."""
    trimesh = pytest.importorskip("trimesh")
    import json

    from nfkit import fields
    from nfkit.apps.cli import main
    from nfkit.apps.wireframe.oracle import write_hawp
    from nfkit.datasets.mesh_views import mesh_views, write_mesh_views

    mesh = trimesh.creation.box(extents=(1.0, 0.8, 0.6))
    views = mesh_views(mesh, n_views=12, size=48, seed=1)
    data = tmp_path / "box"
    write_mesh_views(views, data)
    j, e = sharp_edges(views.mesh)
    write_hawp(tmp_path / "hawp", views.scene.names, oracle_lines(views.mesh, views.scene.cameras, j, e), 48, 48)
    gj, ge = sharp_edges(mesh)  # the mesh file's own coordinates = the dataset's input coordinates
    (data / "lines.json").write_text(json.dumps({"junctions": gj.tolist(), "lines": ge.tolist()}))
    out = tmp_path / "out"
    rc = main(["wireframe", str(data), "--out", str(out), "--lines", str(tmp_path / "hawp"), "--steps", "15",
               "--no-progress", "--gt-frame", "world", "--min-views", "2"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["lines_source"].startswith("hawp:") and m["steps"] == 15 and m["segments_2d"] > 50
    assert m["evaluation"]["n_gt_lines"] == 12 and m["config"]["steps"] == 15
    wf = json.loads((out / "wireframe.json").read_text())
    assert len(wf["lines"]) == m["edges"]
    field, meta, extra = fields.load(out / "field.safetensors", return_extras=True)
    assert field.kind == "sdf" and any(k.startswith("wireframe.head.") for k in extra)
    assert any(k.startswith("wireframe.junctions.") for k in extra) and "occgrid.binary" in extra
