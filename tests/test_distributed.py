"""Data-parallel training (nfkit.distributed): 2 gloo ranks on this machine.

* The loop: two ranks, each with half of a fixed batch, end with the same parameters as one process with the whole
  batch (averaged gradients = the full batch's gradient), and with each other.
* ``torchrun -m nfkit.apps fit`` on the tiny sphere capture: exit 0, rank 0's outputs only, the samples of both
  ranks counted; a rank that fails ends the job non-zero with a line naming the rank.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TORCHRUN_ENV, free_port, torchrun_cmd
from nfkit.loop import Loop, Objective, Schedule

STEPS = 25


class HalfBatch(Objective):
    """Linear regression on a fixed batch of 64 points; ``part`` selects rows (a rank's share) or None (all)."""

    desc = "toy"

    def __init__(self, part: slice | None):
        torch.manual_seed(0)
        self.field = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        g = torch.Generator().manual_seed(1)
        x = torch.randn(64, 3, generator=g)
        y = (x @ torch.tensor([[1.0], [-2.0], [0.5]])).sin()
        self.x, self.y = (x, y) if part is None else (x[part], y[part])

    def param_groups(self, lr):
        return [{"params": list(self.field.parameters())}]

    def losses(self, step, progress):
        return {"mse": ((self.field(self.x) - self.y) ** 2).mean()}


def _rank_main(rank: int, port: int, out: str) -> None:
    from safetensors.torch import save_file

    from nfkit import distributed

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NFKIT_THREADS_PER_RANK="1")
    distributed.init()
    try:
        obj = HalfBatch(slice(32 * rank, 32 * (rank + 1)))
        if rank == 1:  # a different start: the loop must broadcast rank 0's field
            with torch.no_grad():
                for p in obj.field.parameters():
                    p.add_(1.0)
        loop = Loop(obj, Schedule(steps=STEPS, lr=1e-2, lr_final=1.0, warmup=1))
        loop.run()
        save_file({k: v.contiguous() for k, v in obj.field.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    finally:
        distributed.shutdown()


def test_two_ranks_equal_one_process_on_the_whole_batch(tmp_path):
    from safetensors.torch import load_file

    torch.multiprocessing.spawn(_rank_main, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    one = HalfBatch(None)
    Loop(one, Schedule(steps=STEPS, lr=1e-2, lr_final=1.0, warmup=1)).run()
    r0, r1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    for k, v in one.field.state_dict().items():
        assert torch.equal(r0[k], r1[k]), f"{k}: the ranks' fields differ"
        assert torch.allclose(r0[k], v, atol=1e-5), f"{k}: 2 ranks x 32 rows != 1 process x 64 rows"
    start = HalfBatch(None).field.state_dict()
    assert any(not torch.allclose(start[k], v) for k, v in r0.items()), "the fields did not train"


def _torchrun(args: list[str], tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_cmd(args), capture_output=True, text=True, timeout=timeout, env=TORCHRUN_ENV,
                          cwd=tmp_path)


FIT_ARGS = ["--field-options", "n_levels=4", "log2_hashmap_size=12", "hidden=16", "--samples-per-step", "4096",
            "--steps", "30", "--quiet"]


def test_torchrun_fit_two_ranks(sphere_capture, tmp_path):
    out = tmp_path / "out"
    proc = _torchrun(["fit", str(sphere_capture), "--out", str(out)] + FIT_ARGS, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["psnr"] is not None
    assert (out / "field.safetensors").is_file() and (out / "checkpoint").is_dir()
    assert proc.stdout.count("nfkit fit: {") == 1, "only rank 0 reports"


def test_two_nodes_over_loopback(sphere_capture, tmp_path):
    """Two torchrun agents (one rank each) meeting at a c10d rendezvous on 127.0.0.1: the multi-node launch."""
    port, out = free_port(), tmp_path / "out"
    env = TORCHRUN_ENV
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "nfkit-test",
           "-m", "nfkit.apps", "fit", str(sphere_capture), "--out", str(out)] + FIT_ARGS
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
             for _ in range(2)]
    results = [p.communicate(timeout=240) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], [r[1][-1500:] for r in results]
    assert sum(r[0].count("nfkit fit: {") for r in results) == 1, "only the global rank 0 reports"
    assert json.loads((out / "metrics.json").read_text())["steps"] == 30


def test_torchrun_failing_rank_names_itself(tmp_path):
    proc = _torchrun(["fit", str(tmp_path / "missing"), "--out", str(tmp_path / "out")] + FIT_ARGS, tmp_path)
    assert proc.returncode != 0
    assert "nfkit: error: rank 0:" in proc.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_other_commands_refuse_torchrun(tmp_path):
    proc = _torchrun(["fit-image", "skimage:camera", "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode != 0
    assert "nfkit fit-image runs in one process; under torchrun only nfkit fit" in proc.stderr
