"""nfkit sfm end to end on the Middlebury temple ring (slow: a few minutes on 2 cores)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "temple_ring"


@pytest.mark.slow
def test_sfm_cli_temple_ring(tmp_path):
    if not (DATA / "templeSR_par.txt").exists():
        pytest.skip(f"{DATA} missing (shared data)")
    import pycolmap

    from nfkit.apps.cli import main
    from nfkit.datasets.load import load_dataset

    out = tmp_path / "sfm"
    rc = main(["sfm", str(DATA), "--out", str(out), "--intrinsics", "1520.4,1525.9,302.32,246.87"])
    assert rc in (0, None)
    rep = json.loads((out / "report.json").read_text())
    assert rep["total"] == 16 and rep["registered"] >= 12
    assert set(rep["seconds_per_stage"]) >= {"matching", "init", "register", "triangulate", "bundle"}
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert rec.num_reg_images() == rep["registered"] and rec.num_points3D() == rep["n_points"]
    scene = load_dataset(str(out / "transforms.json"), "train")
    assert len(scene.images) >= 1
    assert (out / "sdf.safetensors").exists()
