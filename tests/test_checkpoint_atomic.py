"""Checkpoints are one atomic unit: a process killed (SIGKILL) at any point of a checkpoint write leaves the previous
or the new checkpoint, never a field of one save with the state of another; a mixed pair is refused on resume."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import nfkit  # noqa: F401
import pytest
import torch

from nfkit import fields
from nfkit.checkpoint import load_checkpoint, save_checkpoint
from nfkit.errors import NfkitError
from nfkit.loop import make_adam
from nfkit.renderers import OccupancyGrid

AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])
CONFIG = {"hidden": 16, "n_layers": 2, "n_freqs": 3}

# The child saves checkpoint 1 (every parameter, Adam moment and grid cell = 1), then checkpoint 2 (all = 2) with
# one file-system call hooked: before its n-th call it prints PAUSED and sleeps until the parent kills it.
CHILD = textwrap.dedent("""
    import os, shutil, sys, time
    sys.path.insert(0, {tests!r})
    import test_checkpoint_atomic as t
    ckpt, hook = sys.argv[1], sys.argv[2]
    t.save_filled(ckpt, 1)
    name, nth = hook.split(":")
    mod = shutil if name == "rmtree" else os
    orig, count = getattr(mod, name), [0]
    def hooked(*a, **k):
        count[0] += 1
        if count[0] == int(nth):
            print("PAUSED", flush=True)
            time.sleep(120)
        return orig(*a, **k)
    setattr(mod, name, hooked)
    t.save_filled(ckpt, 2)
    print("DONE", flush=True)
""")


def parts():
    torch.manual_seed(0)
    field = fields.build_field("mlp", CONFIG, AABB)
    grid = OccupancyGrid(AABB, 8)
    opt = make_adam([{"params": list(field.parameters())}], 1e-2)
    return field, grid, opt


def save_filled(ckpt, value: float) -> None:
    """A checkpoint whose parameters, Adam moments and occupancy cells all equal ``value`` (loop step = value)."""
    field, grid, opt = parts()
    with torch.no_grad():
        for p in field.parameters():
            p.fill_(value)
            opt.state[p] = {"step": torch.tensor(value), "exp_avg": torch.full_like(p, value),
                            "exp_avg_sq": torch.full_like(p, value)}
        grid.density.fill_(value)
    save_checkpoint(ckpt, field, grid, opt, {"step": int(value), "elapsed": value, "n_rays": 7}, None)


def load_filled(ckpt) -> float:
    """Loads the checkpoint and checks every tensor holds the loop step's value; returns it."""
    field, grid, opt = parts()
    st = load_checkpoint(ckpt, field, grid, opt)
    v = float(st["step"])
    assert all(bool((p == v).all()) for p in field.parameters())
    assert all(bool((s["exp_avg"] == v).all()) and float(s["step"]) == v for s in opt.state.values())
    assert bool((grid.density == v).all())
    return v


@pytest.mark.parametrize("hook, expected", [
    ("replace:1", 1.0),  # writing the new field file
    ("fsync:2", 1.0),  # new files written, not yet synced
    ("rename:2", 1.0),  # between the renames: only checkpoint.old exists
    ("rmtree:1", 2.0),  # new checkpoint in place, old one not yet removed
])
def test_kill_during_checkpoint_write_leaves_a_whole_checkpoint(tmp_path, hook, expected):
    ckpt = tmp_path / "checkpoint"
    code = CHILD.format(tests=os.path.dirname(__file__))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(ckpt), hook], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stdout.readline().strip()
        assert line == "PAUSED", line
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert load_filled(ckpt) == expected
    save_filled(ckpt, 3)  # the next save recovers from whatever the kill left
    assert load_filled(ckpt) == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_mixed_pair_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    save_filled(a, 1)
    save_filled(b, 2)
    assert load_filled(b) == 2.0
    shutil.copyfile(a / "field.safetensors", b / "field.safetensors")
    with pytest.raises(NfkitError, match="different checkpoints"):
        load_filled(b)


def test_rng_state_is_restored(tmp_path):
    field, grid, opt = parts()
    gen = torch.Generator().manual_seed(5)
    torch.rand(3), torch.rand(3, generator=gen)
    save_checkpoint(tmp_path / "c", field, grid, opt, {"step": 0}, None, {"g": gen})
    expected = torch.rand(4), torch.rand(4, generator=gen)
    torch.manual_seed(123), gen.manual_seed(9)
    load_checkpoint(tmp_path / "c", field, grid, opt, {"g": gen})
    assert torch.equal(torch.rand(4), expected[0]) and torch.equal(torch.rand(4, generator=gen), expected[1])
