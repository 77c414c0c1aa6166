"""``nfkit eval FIELD --data DATA`` reproduces the held-out PSNR / SSIM that ``nfkit fit`` reported, per view and on
average, and writes them as JSON (LPIPS null with a note when its weights are not available locally)."""
import json

from conftest import TINY_FIELD, write_sphere_capture

from nfkit.apps.cli import main


def test_eval_reproduces_the_fit_psnr(tmp_path, capsys):
    data = write_sphere_capture(tmp_path / "cap", n=10, size=16)
    out = tmp_path / "fit"
    assert main(["fit", str(data), "--out", str(out), "--steps", "25", *TINY_FIELD]) == 0
    fit = json.loads((out / "metrics.json").read_text())
    assert fit["eval_views"] >= 1 and fit["psnr"] > 5
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["eval", str(out / "field.safetensors"), "--data", str(data), "--out", str(report), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ev = json.loads(report.read_text())
    assert printed["psnr"] == ev["psnr"] and "per_view" in ev and "per_view" not in printed
    assert ev["n_views"] == fit["eval_views"] == len(ev["per_view"])
    assert abs(ev["psnr"] - fit["psnr"]) < 1e-3, (ev["psnr"], fit["psnr"])
    assert abs(ev["ssim"] - fit["ssim"]) < 1e-4
    assert abs(sum(v["psnr"] for v in ev["per_view"]) / ev["n_views"] - ev["psnr"]) < 1e-6
    assert ev["lpips"] is None and "lpips_note" in ev or isinstance(ev["lpips"], float)


def test_eval_refuses_to_write_over_the_field(tmp_path, capsys):
    data = write_sphere_capture(tmp_path / "cap", n=4, size=8)
    field = tmp_path / "f.safetensors"
    field.write_bytes(b"not used")
    before = field.read_bytes()
    assert main(["eval", str(field), "--data", str(data), "--out", str(field)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("nfkit: error:") and field.read_bytes() == before
