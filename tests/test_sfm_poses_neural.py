"""``nfkit fit CAPTURE --poses neural``: nfkit sfm in place of pycolmap's mapper in the capture path, and a bad
``--poses`` value (one line, exit 2)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "temple_ring"


def test_bad_poses_value_one_line(tmp_path, capsys):
    from nfkit.apps.cli import main

    (tmp_path / "imgs").mkdir()
    rc = main(["fit", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"), "--poses", "magic"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--poses" in err[0] and "neural" in err[0], err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_fit_scene_passes_the_neural_poser(tmp_path, monkeypatch):
    """`nfkit fit --poses neural` hands apps.sfm's poser to the capture path (the library imports no app)."""
    from nfkit.apps import fit_scene
    from nfkit.apps.sfm.poser import neural_poser
    from nfkit.errors import NfkitError

    seen = {}

    def fake_prepare(data, out, n_frames=40, poser=None, **kw):
        seen["poser"] = poser
        raise NfkitError("stop here")

    import imageio.v3 as iio

    monkeypatch.setattr("nfkit.datasets.capture.prepare_capture", fake_prepare)
    (tmp_path / "imgs").mkdir()
    iio.imwrite(tmp_path / "imgs" / "a.png", np.zeros((8, 8, 3), np.uint8))
    for poses, want in (("neural", neural_poser), ("colmap", None)):
        ns = fit_scene.build_parser().parse_args([str(tmp_path / "imgs"), "--out", str(tmp_path / "o"),
                                                  "--poses", poses])
        with pytest.raises(NfkitError, match="stop here"):
            fit_scene.run(ns)
        assert seen["poser"] is want


@pytest.mark.slow
def test_neural_poser_writes_transforms_the_fit_reads(tmp_path):
    """Six neighbouring views of the temple ring (an arc of ~110 degrees) through prepare_capture with nfkit sfm
    (intrinsics unknown, small step budgets)."""
    if not (DATA / "templeSR0001.png").exists():
        pytest.skip(f"{DATA} missing (shared data)")
    from functools import partial

    from nfkit.apps.sfm.config import SfmConfig
    from nfkit.apps.sfm.poser import neural_poser
    from nfkit.datasets.capture import prepare_capture
    from nfkit.datasets.load import load_dataset

    src = tmp_path / "photos"
    src.mkdir()
    for k in (2, 1, 11, 10, 9, 8):  # consecutive on the ring
        shutil.copy(DATA / f"templeSR{k:04d}.png", src)
    cfg = SfmConfig(init_steps=60, tri_steps=20, ba_steps=40, global_ba_steps=60, final_ba_steps=100,
                    max_features=4096)
    out = tmp_path / "scene"
    tj = prepare_capture(src, out, max_side=None, poser=partial(neural_poser, cfg=cfg), log=lambda *a: None)
    assert tj == out / "transforms.json"
    report = json.loads((out / "poses.json").read_text())
    assert report["ok"] and report["n_registered"] >= 5 and "nfkit sfm" in report["matcher"]
    assert (out / "colmap" / "sparse" / "0").is_dir() and (out / "colmap" / "sfm_report.json").exists()
    scene = load_dataset(str(tj), "train")
    assert len(scene.images) >= 1
    meta = json.loads(tj.read_text())
    c2w = np.array([f["transform_matrix"] for f in meta["frames"]])
    assert c2w.shape[1:] == (4, 4) and np.isfinite(c2w).all()
    assert np.linalg.norm(c2w[:, :3, 3] - c2w[:, :3, 3].mean(0), axis=1).max() > 0  # distinct cameras
