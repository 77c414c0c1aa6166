"""Data-parallel training on PyTorch's own engine (``torchrun`` + :mod:`torch.distributed`).

``torchrun --nproc_per_node N -m nfkit.apps fit DATA --out DIR`` starts N copies of a command; each reads the
rendezvous from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``). :func:`init` joins the process group (gloo on CPUs, NCCL when the command trains
on CUDA, each rank on GPU ``LOCAL_RANK``) and sets the threads per rank to cores / ranks on this node
(``NFKIT_THREADS_PER_RANK`` overrides; torchrun's own default is 1).

What is synchronised (see :class:`nfkit.loop.Loop`): the field's parameters and buffers are broadcast from rank 0
before the first step; after every backward pass the gradients are averaged over the ranks by all-reduce (a rank
whose rays met nothing contributes zeros), so every rank's Adam takes the same step and the fields stay identical;
the occupancy grid is broadcast from rank 0 after each of its updates; the clock is the slowest rank's (every
rank stops at the same step) and samples are summed over the ranks. Each rank draws its own rays (its random
stream is seeded by rank). Only rank 0 writes checkpoints, field files, renders and metrics.

Without torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op and :func:`current` is None.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from nfkit.errors import NfkitError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str  # "gloo" | "nccl"

    @property
    def main(self) -> bool:
        return self.rank == 0


_CTX: DistContext | None = None


def launched() -> bool:
    """Whether this process was started by torchrun (or an equivalent) as one rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(use_cuda: bool = False, timeout_s: float = 1800.0) -> DistContext | None:
    """Join the process group torchrun describes (idempotent); None when not launched as several ranks."""
    global _CTX
    if _CTX is not None or not launched():
        return _CTX
    import torch.distributed as dist

    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise NfkitError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {key} is not set: start several ranks "
                             "with torchrun (docs/SCALING.md)")
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = "nccl" if use_cuda and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    threads = int(os.environ.get("NFKIT_THREADS_PER_RANK", "0")) or max(1, (os.cpu_count() or 1) // per_node)
    torch.set_num_threads(threads)
    _CTX = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    return _CTX


def current() -> DistContext | None:
    """The job this process belongs to, or None (one process)."""
    return _CTX


def is_main() -> bool:
    """True in a single process and on rank 0: the one that writes outputs and prints progress."""
    return _CTX is None or _CTX.main


def rank_prefix() -> str:
    """``"rank R: "`` in a process torchrun started as one rank of several, else ``""`` (for error lines)."""
    return f"rank {os.environ.get('RANK', '?')}: " if launched() else ""


def barrier() -> None:
    if _CTX is not None:
        import torch.distributed as dist

        dist.barrier()


def run_once(fn):
    """``fn()`` on rank 0 first, then (after a barrier) on the other ranks: e.g. building the C++ kernels, which the
    other ranks then load from the cache instead of compiling the same files at once. Returns fn's result."""
    if _CTX is None:
        return fn()
    if _CTX.main:
        result = fn()
        barrier()
        return result
    barrier()
    return fn()


def shutdown() -> None:
    global _CTX
    if _CTX is not None:
        import torch.distributed as dist

        dist.destroy_process_group()
        _CTX = None


def broadcast_tensors(tensors, src: int = 0) -> None:
    """Overwrite each tensor (in place, through ``copy_``) with rank ``src``'s. Bool tensors travel as uint8."""
    if _CTX is None:
        return
    import torch.distributed as dist

    for t in tensors:
        buf = t.detach().to(torch.uint8) if t.dtype == torch.bool else t.detach().clone()
        dist.broadcast(buf, src)
        with torch.no_grad():
            t.copy_(buf.to(t.dtype))


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of ``module`` from rank ``src``."""
    broadcast_tensors(list(module.parameters()) + list(module.buffers()), src)


def broadcast_str(text: str | None, src: int = 0) -> str:
    """Rank ``src``'s string on every rank (as bytes in a tensor; nothing is unpickled)."""
    if _CTX is None:
        return text or ""
    import torch.distributed as dist

    dev = _comm_device()
    data = torch.tensor(list((text or "").encode()), dtype=torch.uint8, device=dev) if _CTX.rank == src else None
    n = torch.tensor([0 if data is None else data.numel()], dtype=torch.int64, device=dev)
    dist.broadcast(n, src)
    buf = data if data is not None else torch.zeros(int(n), dtype=torch.uint8, device=dev)
    dist.broadcast(buf, src)
    return bytes(buf.cpu().tolist()).decode()


def average_gradients(params: list[torch.Tensor]) -> bool:
    """All-reduce the gradients of ``params`` and divide by the ranks: every rank ends with the mean, as if one
    process had seen all the ranks' rays. A parameter no rank has a gradient for keeps ``None`` (Adam skips it, as
    in one process); one that only other ranks have a gradient for gets zeros here first. One small all-reduce of
    the flags, then one in place per gradient (no flat copy: concatenating a 10M-entry hash table's gradient cost
    as much as the all-reduce itself, ~25 ms on 2 cores). Returns whether any rank had a gradient at all."""
    if _CTX is None:
        return any(p.grad is not None for p in params)
    import torch.distributed as dist

    flags = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    dist.all_reduce(flags)
    counts = flags.tolist()
    for p, c in zip(params, counts):
        if c == 0:
            p.grad = None
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        elif not p.grad.is_contiguous():
            p.grad = p.grad.contiguous()
        dist.all_reduce(p.grad)
        p.grad.div_(_CTX.world_size)
    return sum(counts) > 0


def reduce_step(seconds: float, samples: int) -> tuple[float, int]:
    """(the slowest rank's step seconds, the samples of all ranks): one clock and one count for the job."""
    if _CTX is None:
        return seconds, samples
    import torch.distributed as dist

    t = torch.tensor([seconds], dtype=torch.float64, device=_comm_device())
    n = torch.tensor([samples], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    dist.all_reduce(n)
    return float(t), int(n)


def rank_seed(seed: int, step: int = 0, generators=()) -> None:
    """Give ranks other than 0 their own random stream (torch's and each of ``generators``, seeded by seed, rank and
    step); rank 0 keeps its own, so a one-rank job draws exactly what one process does."""
    if _CTX is None or _CTX.main:
        return
    s = (int(seed) * 1_000_003 + _CTX.rank * 7919 + int(step)) % (2**63 - 1)
    torch.manual_seed(s)
    for i, g in enumerate(generators):
        g.manual_seed((s + 104_729 * (i + 1)) % (2**63 - 1))


def _comm_device() -> torch.device:
    """Where the collective's small tensors live: NCCL needs them on this rank's GPU."""
    if _CTX is not None and _CTX.backend == "nccl":
        return torch.device("cuda", _CTX.local_rank)
    return torch.device("cpu")
