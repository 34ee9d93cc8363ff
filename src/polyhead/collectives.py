"""Collectives that keep the ranks' decisions the same under data parallelism
(torch.distributed; training/distributed.py says why they are needed). Below every floor that
takes such a decision (objectives: a loss weighting's weights; training: the trainer's steps),
so neither imports the other for them. Without an initialised process group each returns its
input.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _spread() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    """NCCL moves only CUDA tensors; gloo takes CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the ranks (a new tensor); ``t`` itself in one process."""
    if not _spread():
        return t
    out = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out)
    return (out / dist.get_world_size()).to(t.device)


def all_true(flag: bool) -> bool:
    """True only when ``flag`` is true on every rank."""
    if not _spread():
        return bool(flag)
    t = torch.tensor([float(bool(flag))], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def from_main(values: list[float]) -> list[float]:
    """Rank 0's ``values`` on every rank (float64: wall-clock seconds keep their precision)."""
    if not _spread():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.broadcast(t, src=0)
    return t.tolist()


def gather(values: list[float]) -> list[list[float]]:
    """Every rank's ``values`` (the same length on each), in rank order, on every rank."""
    if not _spread():
        return [list(values)]
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return [o.tolist() for o in out]
