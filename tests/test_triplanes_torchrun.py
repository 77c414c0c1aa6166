"""A sharded job on torchrun (issue 24): ``nfkit triplanes fit`` split over 2 ranks writes the same shards as one
process; a rank killed mid-way ends the job non-zero, and rerunning it fits only the shards still missing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TORCHRUN_ENV, torchrun_cmd
from nfkit.apps.cli import main

FIT = ["--shard-size", "1", "--batch-shapes", "1", "--channels", "4", "--resolution", "8", "--hidden", "16",
       "--samples", "1024", "--surface-points", "64", "--points-per-step", "256", "--quiet"]
ENV = TORCHRUN_ENV


def _torchrun(args: list[str]) -> list[str]:
    return torchrun_cmd(["triplanes", "fit"] + args)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tp") / "shapes"
    assert main(["triplanes", "make-shapes", "--per-class", "1", "--test-per-class", "0", "--out", str(root),
                 "--quiet"]) == 0
    return root


def _shards(bank: Path) -> dict[str, dict]:
    return {p.name: load_file(p) for p in sorted(bank.glob("shard-*.safetensors"))}


def _fitted(stdout: str) -> list[int]:
    """Shards fitted, over every rank's summary line."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("nfkit triplanes fit: {"):
            out += json.loads(line.split(": ", 1)[1].rsplit(" -> ", 1)[0])["fitted_shards"]
    return sorted(out)


def test_two_ranks_write_the_shards_of_one_process(shapes, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["triplanes", "fit", str(shapes), "--out", str(one), "--steps", "30"] + FIT) == 0
    proc = subprocess.run(_torchrun([str(shapes), "--out", str(two), "--steps", "30"] + FIT), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = _shards(one), _shards(two)
    assert a.keys() == b.keys() and len(a) == 10
    for name in a:
        for k in a[name]:
            torch.testing.assert_close(b[name][k], a[name][k], atol=1e-5, rtol=1e-5, msg=f"{name}: {k}")
    assert _fitted(proc.stdout) == list(range(10))


def _rank_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes (children of ``parent`` with RANK in their environment)."""
    ranks = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid == parent:
            for kv in env:
                if kv.startswith(b"RANK="):
                    ranks[int(kv[5:])] = int(d.name)
    return ranks


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks' processes through /proc (Linux)")
def test_killed_rank_fails_the_job_and_a_rerun_fits_only_the_rest(shapes, tmp_path):
    bank = tmp_path / "bank"
    job = subprocess.Popen(_torchrun([str(shapes), "--out", str(bank), "--steps", "400"] + FIT), env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(list(bank.glob("shard-*.safetensors"))) < 2 and time.time() < deadline and job.poll() is None:
        time.sleep(0.2)
    pids = _rank_pids(job.pid)
    assert 1 in pids and job.poll() is None, "the job ended before a rank could be killed"
    os.kill(pids[1], signal.SIGKILL)
    _, err = job.communicate(timeout=240)
    assert job.returncode != 0, "a killed rank must fail the job"
    before = {p.name: p.stat().st_mtime_ns for p in bank.glob("shard-*.safetensors")}
    assert 0 < len(before) < 10
    # a shard being written when the rank died stays under its temporary name (*.PID.tmp), never a final name
    proc = subprocess.run(_torchrun([str(shapes), "--out", str(bank), "--steps", "400"] + FIT), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = {p.name: p.stat().st_mtime_ns for p in bank.glob("shard-*.safetensors")}
    assert len(after) == 10
    assert all(after[n] == t for n, t in before.items()), "a finished shard was fitted again"
    missing = sorted(int(n.split("-")[1]) for n in after if n not in before)
    assert _fitted(proc.stdout) == missing
