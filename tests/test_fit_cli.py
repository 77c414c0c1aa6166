"""`nfkit fit` end to end on a tiny synthetic capture: outputs, resume, and one-line errors for bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_FIELD, write_sphere_capture

from nfkit import fields
from nfkit.apps.cli import main


def test_fit_writes_metrics_field_and_renders(sphere_capture, tmp_path):
    out = tmp_path / "out"
    assert main(["fit", str(sphere_capture), "--out", str(out), "--steps", "30", *TINY_FIELD]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in ("psnr", "ssim", "steps", "train_seconds", "samples_per_second", "n_params", "field"):
        assert k in m
    assert m["steps"] == 30 and np.isfinite(m["psnr"]) and m["psnr"] > 5
    fields.load(m["field"])
    assert len(list((out / "renders").glob("*.png"))) == 2  # frames 0 and 8 of 10 are held out


def test_resume_continues_from_checkpoint(sphere_capture, tmp_path):
    out = tmp_path / "out"
    assert main(["fit", str(sphere_capture), "--out", str(out), "--steps", "10", *TINY_FIELD]) == 0
    state = fields.read_header(out / "checkpoint" / "field.safetensors")
    assert state["family"] == "hashgrid"
    first = json.loads((out / "metrics.json").read_text())
    assert main(["fit", str(sphere_capture), "--out", str(out), "--steps", "20", "--resume", *TINY_FIELD]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 20
    # the resumed run only trained the 10 missing steps: its wall time continues the first run's
    assert m["train_seconds"] >= first["train_seconds"]


def test_resume_without_checkpoint_is_a_clear_error(sphere_capture, tmp_path, capsys):
    assert main(["fit", str(sphere_capture), "--out", str(tmp_path / "new"), "--steps", "5", "--resume",
                 *TINY_FIELD]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nfkit.apps.cli", *args], capture_output=True, text=True, timeout=120)


def _assert_one_line_error(r, needle):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfkit: error:"), r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("case", ["missing_image", "malformed_json", "nan_pose", "no_such_path"])
def test_bad_inputs_exit_2_with_one_line(tmp_path, case):
    root = write_sphere_capture(tmp_path / "cap", n=4, size=8)
    tj = root / "transforms.json"
    needle = "transforms.json"
    if case == "missing_image":
        (root / "images" / "f002.png").unlink()
        needle = "f002.png"
    elif case == "malformed_json":
        tj.write_text(tj.read_text()[:-20])
    elif case == "nan_pose":
        meta = json.loads(tj.read_text())
        meta["frames"][1]["transform_matrix"][0][3] = float("nan")
        tj.write_text(json.dumps(meta))
    else:
        root = tmp_path / "nowhere"
        needle = "nowhere"
    r = _run_cli("fit", str(root), "--out", str(tmp_path / "o"), "--steps", "2", "--quiet")
    _assert_one_line_error(r, needle)
    assert not (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.parametrize("content", [b"", b"this is not a field file", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_bad_field_file_exits_2(tmp_path, content):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    code = ("import sys; from nfkit.apps.cli import guarded; from nfkit import fields; "
            f"sys.exit(guarded(lambda: fields.load({str(bad)!r})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    _assert_one_line_error(r, "bad.safetensors")
