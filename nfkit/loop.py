"""One training loop for every objective: ``nfkit fit`` (radiance and surface fields), ``nfkit convert`` (PVD),
``fit-image`` / ``fit-sdf`` (coordinate regression).

An :class:`Objective` says *what* is learned: its parameter groups, ``losses(step, progress)`` -> dict name ->
scalar tensor (the loop sums them and logs each), and optional hooks (``before_step``, ``after_step``,
``finish``, checkpoint ``state``/``modules``). The :class:`Loop` says *how*: the clock (``steps`` or
``max_seconds``, whichever binds first; only training steps count), Adam (:func:`make_adam`), a linear warm-up then exponential decay of every
group's rate to ``lr_final`` of its base at the end of the run (:func:`lr_factor`), divergence detection (a
non-finite loss raises :class:`~nfkit.errors.NfkitError`), periodic and Ctrl-C checkpoints
(:mod:`nfkit.checkpoint`, with the random state), the progress bar (tqdm, ETA from whichever limit binds) and an
untimed ``callback`` after each step. Objectives that draw rays keep a fixed sample budget with a
:class:`RayBudget` (rays per step adapt to the samples the last step used).

A loss returned without a graph (``requires_grad`` False) means nothing to learn this step (e.g. no ray met the
occupancy grid): the step counts, the optimizer does not move.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from nfkit import distributed
from nfkit.errors import NfkitError


def make_adam(groups, lr: float) -> torch.optim.Optimizer:
    """Adam as instant-ngp (eps 1e-15, betas 0.9/0.99); the fused single-pass kernel when torch has it (~10x faster
    on a CPU for a 10M-parameter hash table)."""
    try:
        return torch.optim.Adam(groups, lr=lr, eps=1e-15, betas=(0.9, 0.99), fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(groups, lr=lr, eps=1e-15, betas=(0.9, 0.99))


def adam_groups(field, lr: float) -> list[dict]:
    """Adam parameter groups of a field: the family's own ``param_groups(lr)`` when it has one (learning rates per
    group), else grids/encodings without weight decay and the networks with 1e-6. Empty groups are dropped."""
    if hasattr(field, "param_groups"):
        groups = field.param_groups(lr)
    else:
        grid = [p for n, p in field.named_parameters() if "encoding" in n or "plane" in n]
        rest = [p for n, p in field.named_parameters() if not ("encoding" in n or "plane" in n)]
        groups = [{"params": grid, "weight_decay": 0.0}, {"params": rest, "weight_decay": 1e-6}]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, progress: float, lr_final: float, warmup: int = 50) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps (step 0 -> 1 / warmup), times
    ``lr_final ** progress`` (exponential decay to ``lr_final`` of the base rate at progress 1; progress clamped)."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return warm * (lr_final ** min(1.0, progress))


class RayBudget:
    """Rays per step for a fixed sample budget, as nerfacc's examples: after each step, ``n_rays`` scales by
    ``samples_per_step / samples used``, between ``min_rays`` and ``max_rays``. Under torchrun the budget is the
    job's, split evenly over the ranks.

    The floor of 32 only binds while rays hold more than samples_per_step / 32 samples: early in a run, before the
    occupancy grid has emptied the fog, at small budgets. A floor of 256 made the first ~250 steps at 4096 samples
    ~10x too big on lego/100 (rbf: 8 steps/s, then 35); at 32, rbf reaches bench/convert.py's 30.20 dB target at
    143-179 s instead of 179-224 s and the tri-plane at 60-75 s instead of 72-89 s. For the distiller, a floor of 256
    held a dense capture (apple video, ~30 kept samples a ray) at ~7.6k samples a step: its mlp student reached
    28.95 dB in 90 s there, 29.60 dB in 85 s with 32."""

    MIN_RAYS, MAX_RAYS = 32, 1 << 16

    def __init__(self, samples_per_step: int, n_rays: int = 1024):
        # Data-parallel runs (nfkit.distributed): samples_per_step is the job's; each rank draws its share, so a step
        # of R ranks sees as many samples as one process's step (the same schedule and learning rate hold).
        ctx = distributed.current()
        world = 1 if ctx is None else ctx.world_size
        self.samples_per_step, self.n_rays = max(1, samples_per_step // world), max(1, n_rays // world)

    def update(self, samples: int) -> int:
        """Adapt to the samples the last step used; returns the new ``n_rays``."""
        scaled = self.n_rays * self.samples_per_step / max(1, samples)
        self.n_rays = int(min(self.MAX_RAYS, max(self.MIN_RAYS, scaled)))
        return self.n_rays


class Objective:
    """What a :class:`Loop` trains. Subclasses set ``field`` (the module saved in checkpoints; ``grid``: its
    occupancy grid or None) and implement :meth:`param_groups` and :meth:`losses`; the hooks are optional."""

    field: torch.nn.Module
    grid = None
    desc = "train"  # progress-bar label

    def param_groups(self, lr: float) -> list[dict]:
        """Adam parameter groups (each may carry its own ``lr``; the loop scales every group's base rate)."""
        raise NotImplementedError

    def losses(self, step: int, progress: float) -> dict[str, torch.Tensor]:
        """Weighted scalar loss terms of one step; the loop sums them. ``progress`` in [0, 1]: the run's fraction."""
        raise NotImplementedError

    def before_step(self, step: int, progress: float) -> None:
        """Runs before :meth:`losses` inside the timed step."""

    def step_stats(self) -> dict:
        """Numbers of the last step besides its losses (logged; ``samples`` also counts toward samples/s)."""
        return {}

    def after_step(self, stats: dict, seconds: float) -> None:
        """Bookkeeping after each step (untimed): the step's stats and its training seconds."""

    def finish(self) -> None:
        """Runs once when the clock stops, before the final checkpoint."""

    def postfix(self, ema: dict) -> dict:
        """Progress-bar postfix from exponential moving averages of the logged numbers."""
        return {"loss": f"{ema['loss']:.4g}"}

    def state(self) -> dict:
        """JSON-able state saved with checkpoints (e.g. rays per step)."""
        return {}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state` from a checkpoint's loop state."""

    def modules(self) -> dict[str, torch.nn.Module]:
        """Trained modules besides ``field`` and ``grid`` (e.g. an extra head, latent codes) whose tensors
        checkpoints keep: name -> module (restored by name, strictly, on resume)."""
        return {}

    def generators(self) -> dict[str, torch.Generator]:
        """Random generators besides torch's global ones whose state checkpoints keep."""
        return {}

    def normalization(self) -> dict | None:
        """The field file's ``normalization`` for checkpoints."""
        return None

    def synced_tensors(self, step: int) -> list[torch.Tensor]:
        """Data-parallel runs (:mod:`nfkit.distributed`): state besides the parameters that every rank must hold
        identical after ``step``, broadcast from rank 0. Default: the occupancy grid's buffers on the steps it was
        updated (its ``last_update_step``)."""
        if self.grid is None or self.grid.last_update_step != step:
            return []
        return list(self.grid.buffers())


@dataclass
class Schedule:
    """The clock and learning-rate schedule of a :class:`Loop`."""

    steps: int
    max_seconds: float = 0.0  # 0: no time limit
    lr: float = 1e-2  # base rate (groups may scale it)
    lr_final: float = 0.03  # the rate ends at lr * this (exponential decay over the run)
    warmup: int = 50  # linear warm-up steps
    checkpoint_seconds: float = 60.0  # checkpoint every this many seconds when the loop has a checkpoint_dir


class Loop:
    """Trains ``objective`` on ``schedule`` (see the module docstring). State: ``step``, ``elapsed`` (training
    seconds), ``total_samples``, ``optimizer``. With ``checkpoint_dir`` the loop checkpoints every
    ``schedule.checkpoint_seconds``, on Ctrl-C and at the end; :meth:`resume` continues from it."""

    def __init__(self, objective: Objective, schedule: Schedule, checkpoint_dir: Path | None = None,
                 progress: bool = False):
        for flag, v, want in (("--steps", schedule.steps, "positive"), ("--max-seconds", schedule.max_seconds, ">= 0")):
            if not (isinstance(v, (int, float)) and math.isfinite(v)) or v < 0 or (flag == "--steps" and v <= 0):
                raise NfkitError(f"{flag} must be a finite number {want}, got {v}")
        self.objective, self.schedule, self.progress = objective, schedule, progress
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.optimizer = make_adam(objective.param_groups(schedule.lr), schedule.lr)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.step, self.elapsed, self.total_samples = 0, 0.0, 0
        self.last_stats: dict = {}
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.dist = distributed.current()
        if self.dist is not None:  # every rank starts from rank 0's field and grid, then draws its own rays
            distributed.broadcast_module(objective.field)
            if objective.grid is not None:
                distributed.broadcast_module(objective.grid)
            distributed.rank_seed(torch.initial_seed(), 0, objective.generators().values())

    # ----- the clock ---------------------------------------------------------------------------------------------
    def progress_fraction(self) -> float:
        s = self.schedule
        p = self.step / max(1, s.steps)
        if s.max_seconds > 0:
            p = max(p, self.elapsed / s.max_seconds)
        return min(1.0, p)

    def done(self) -> bool:
        s = self.schedule
        return self.step >= s.steps or (s.max_seconds > 0 and self.elapsed >= s.max_seconds)

    def lr_factor(self, progress: float) -> float:
        return lr_factor(self.step, progress, self.schedule.lr_final, self.schedule.warmup)

    # ----- one step ----------------------------------------------------------------------------------------------
    def train_step(self) -> dict:
        """One optimisation step (does not advance ``step``; :meth:`run` does). Returns the logged numbers:
        ``loss`` (the sum), each term, and the objective's :meth:`~Objective.step_stats`."""
        obj = self.objective
        progress = self.progress_fraction()
        obj.field.train()
        obj.before_step(self.step, progress)
        terms = obj.losses(self.step, progress)
        total = sum(terms.values())
        value = float(total.detach()) if torch.is_tensor(total) else float(total)
        if not math.isfinite(value):
            parts = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in terms.items())
            raise NfkitError(f"training diverged at step {self.step} (loss {value}: {parts}); try a lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        learn = torch.is_tensor(total) and total.requires_grad
        if learn:
            total.backward()
        if self.dist is not None:  # the mean gradient of all ranks' rays, on every rank
            learn = distributed.average_gradients(self.params)
        if learn:
            f = self.lr_factor(progress)
            for g, lr0 in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = lr0 * f
            self.optimizer.step()
        if self.dist is not None:
            distributed.broadcast_tensors(obj.synced_tensors(self.step))
        return {"loss": value, **{k: float(v.detach()) for k, v in terms.items()}, **obj.step_stats()}

    # ----- the run -----------------------------------------------------------------------------------------------
    def run(self, callback: Callable[["Loop"], None] | None = None,
            step_fn: Callable[[], dict] | None = None) -> None:
        """Steps until :meth:`done`; ``callback(loop)`` after each step (untimed). ``step_fn`` replaces
        :meth:`train_step` (wrappers that instrument steps). Ctrl-C with a checkpoint_dir: checkpoint, then
        NfkitError."""
        from nfkit.progress import progress_bar

        step_fn = step_fn or self.train_step
        # The bar counts progress in 0.1% of whichever limit binds first (steps or seconds), so its ETA is right.
        bar = progress_bar(total=1000, initial=int(1000 * self.progress_fraction()), disable=not self.progress,
                           dynamic_ncols=True, desc=self.objective.desc, unit="‰",
                           bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        last_ckpt, ema = time.perf_counter(), {}
        try:
            while not self.done():
                t0 = time.perf_counter()
                stats = step_fn()
                self.step += 1
                self.last_stats = stats
                dt, samples = distributed.reduce_step(time.perf_counter() - t0, int(stats.get("samples", 0)))
                self.elapsed += dt  # the slowest rank's clock: every rank stops at the same step
                self.total_samples += samples
                self.objective.after_step(stats, dt)
                for k, v in stats.items():
                    if isinstance(v, float):
                        ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
                if self.progress and (self.step % 10 == 0 or self.done()):
                    post = {"step": self.step, **self.objective.postfix(ema)}
                    if self.total_samples:
                        post["samples/s"] = f"{self.total_samples / max(self.elapsed, 1e-9) / 1e3:.0f}k"
                    bar.set_postfix(post, refresh=False)
                bar.update(int(1000 * self.progress_fraction()) - bar.n)
                if callback is not None:
                    callback(self)
                due = time.perf_counter() - last_ckpt > self.schedule.checkpoint_seconds
                if self.checkpoint_dir is not None and due:
                    self.checkpoint()
                    last_ckpt = time.perf_counter()
        except KeyboardInterrupt:
            bar.close()
            if self.checkpoint_dir is None:
                raise
            self.checkpoint()
            raise NfkitError(f"interrupted at step {self.step}; checkpoint saved in {self.checkpoint_dir} "
                             "(continue with --resume)") from None
        bar.close()
        self.objective.finish()
        if self.checkpoint_dir is not None:
            self.checkpoint()

    # ----- checkpoints -------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"step": self.step, "elapsed": self.elapsed, "samples": self.total_samples, **self.objective.state()}

    def checkpoint(self) -> None:
        """Field (+ occupancy grid), Adam's moments, the loop state and the random state, as one unit (rank 0
        only in a data-parallel run)."""
        from nfkit.checkpoint import save_checkpoint

        if not distributed.is_main():
            return
        obj = self.objective
        save_checkpoint(self.checkpoint_dir, obj.field, obj.grid, self.optimizer, self.state(), obj.normalization(),
                        obj.generators(), obj.modules())

    def resume(self) -> None:
        """Restore field, grid, the objective's other modules, optimizer, clock and random state from
        ``checkpoint_dir``."""
        from nfkit.checkpoint import load_checkpoint

        obj = self.objective
        st = load_checkpoint(self.checkpoint_dir, obj.field, obj.grid, self.optimizer, obj.generators(),
                             obj.modules())
        self.step, self.elapsed, self.total_samples = st["step"], st["elapsed"], st.get("samples", 0)
        obj.load_state(st)
        distributed.rank_seed(torch.initial_seed(), self.step, obj.generators().values())
