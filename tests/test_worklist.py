"""Sharded batch jobs (nfkit.worklist, nfkit convert/export on a folder): the split by worker, skipping complete
items, redoing an item whose record is missing, failures reported at the end, the merged manifest; and a 2-rank
torchrun job over a folder of field files."""
import json
import subprocess

import pytest
import torch

from conftest import TORCHRUN_ENV, torchrun_cmd
from nfkit import fields
from nfkit.apps.cli import main as cli_main
from nfkit.atomic import atomic_path
from nfkit.errors import NfkitError
from nfkit.renderers import OccupancyGrid
from nfkit.worklist import WorkItem, my_items, record_path, run_worklist, worker

AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])


def items_in(tmp_path, n=5):
    out = tmp_path / "out"
    return [WorkItem(f"item{i}", f"src{i}", (str(out / f"item{i}.txt"),)) for i in range(n)], out


def writer(log):
    def do(item):
        log.append(item.key)
        with atomic_path(item.outputs[0]) as tmp:
            tmp.write_text(item.source)
        return {"length": len(item.source)}
    return do


def test_split_covers_every_item_once():
    items = list(range(11))
    shares = [my_items(items, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == items and all(len(s) in (3, 4) for s in shares)
    with pytest.raises(NfkitError, match="--rank 2"):
        worker(2, 2)


def test_two_workers_then_rerun_skips_and_manifest_completes(tmp_path):
    items, out = items_in(tmp_path)
    log = []
    r0 = run_worklist(items, writer(log), out, {"job": 1}, rank=0, world=2, progress=False)
    assert r0["done"] == ["item0", "item2", "item4"] and not r0["manifest"]["complete"]
    assert r0["manifest"]["missing"] == ["item1", "item3"]
    r1 = run_worklist(items, writer(log), out, {"job": 1}, rank=1, world=2, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert r1["done"] == ["item1", "item3"] and m["complete"] and m["total"] == 5
    assert [e["result"]["length"] for e in m["items"]] == [4] * 5 and {e["rank"] for e in m["items"]} == {0, 1}
    # A rerun finds everything complete; an item whose record is gone (killed after its output) is done again.
    record_path(out, "item3").unlink()
    log.clear()
    r = run_worklist(items, writer(log), out, {"job": 1}, progress=False)
    assert log == ["item3"] and len(r["skipped"]) == 4 and r["manifest"]["complete"]


def test_a_failing_item_is_reported_after_the_others(tmp_path):
    items, out = items_in(tmp_path, 3)
    ok = writer([])

    def do(item):
        if item.key == "item1":
            raise NfkitError("src1: not a field file")
        return ok(item)

    with pytest.raises(NfkitError, match=r"1 of 3 items failed \(first: item1: src1: not a field file\)"):
        run_worklist(items, do, out, {}, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["missing"] == ["item1"] and not m["complete"] and len(m["items"]) == 2


def save_fields(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        torch.manual_seed(i)
        f = fields.build_field("mlp", {"hidden": 16, "n_layers": 2, "n_freqs": 3, "signal": "radiance"}, AABB)
        grid = OccupancyGrid(AABB, 16)
        with torch.no_grad():
            grid.update(0, f.density, 2.0 / 32)
        fields.save(f, folder / f"scene{i}.safetensors",
                    extra_tensors={f"occgrid.{k}": v for k, v in grid.state_dict().items()})


def test_convert_a_folder(tmp_path, capsys):
    save_fields(tmp_path / "in", 2)
    args = ["convert", str(tmp_path / "in"), str(tmp_path / "out"), "--to", "triplane", "--steps", "4",
            "--samples-per-step", "512", "--eval-views", "1"]
    assert cli_main(args) == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["complete"] and [e["key"] for e in m["items"]] == ["scene0", "scene1"]
    assert fields.read_header(tmp_path / "out" / "scene1.safetensors")["family"] == "triplane"
    assert json.loads((tmp_path / "out" / "scene0.metrics.json").read_text())["to"] == "triplane"
    assert cli_main(args) == 0 and "0 done, 2 already complete" in capsys.readouterr().out
    assert cli_main(["convert", str(tmp_path / "in"), str(tmp_path / "o2"), "--to", "mlp", "--metrics",
                     str(tmp_path / "m.json")]) == 2
    assert "--metrics: not used when IN is a folder" in capsys.readouterr().err


def test_torchrun_two_ranks_share_a_folder(tmp_path):
    """Two ranks copy (same family: an exact copy) four field files: each does its share, rank 0 merges."""
    save_fields(tmp_path / "in", 4)
    cmd = torchrun_cmd(["convert", str(tmp_path / "in"), str(tmp_path / "out"), "--to", "mlp"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=TORCHRUN_ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["complete"] and {e["key"]: e["rank"] for e in m["items"]} == {
        "scene0": 0, "scene1": 1, "scene2": 0, "scene3": 1}
    for i in range(4):
        name = f"scene{i}.safetensors"
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "in" / name).read_bytes()
    one = subprocess.run(torchrun_cmd(["convert", str(tmp_path / "in" / "scene0.safetensors"),
                                       str(tmp_path / "x.safetensors"), "--to", "mlp"]),
                         capture_output=True, text=True, timeout=240, env=TORCHRUN_ENV, cwd=tmp_path)
    assert one.returncode != 0 and "runs as several ranks only on a folder of field files" in one.stderr
