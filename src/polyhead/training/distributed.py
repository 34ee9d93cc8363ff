"""Data parallelism with torchrun and torch.distributed (gloo on CPU, NCCL on GPU).

Why not DDP's module wrapper: DDP all-reduces the gradient of whatever backward it sees, so
with one backward per task it would average per-task gradients at the wrong moment and hide
them from the aggregator. Gradient surgery needs each task's gradient averaged over ranks
*before* aggregation, so every rank computes the same weights; these helpers do exactly that
(bucketed all-reduce of flattened gradients) and nothing more.

Every decision that changes control flow (stop early, skip a non-finite step, roll back, refit
the schedule to the time budget, the weights of a loss weighting) must come out the same on
every rank, or one rank leaves the loop while the others wait in a collective: such decisions
are taken from rank 0's values (``from_main``) or from values reduced over the ranks
(``all_mean``, ``all_true``): ``polyhead/collectives.py``, below objectives/, whose loss
weightings use them too.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..collectives import all_true, from_main, gather


class Distributed:
    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)

    all_true, from_main, gather = staticmethod(all_true), staticmethod(from_main), staticmethod(gather)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        if self.enabled:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def average(self, tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """All-reduce-mean a list of tensors (None stays None) in one flat buffer."""
        if not self.enabled:
            return tensors
        present = [t for t in tensors if t is not None]
        if not present:
            return tensors
        flat = torch.cat([t.reshape(-1) for t in present])
        dist.all_reduce(flat)
        flat /= self.world_size
        out, i = [], 0
        for t in tensors:
            if t is None:
                out.append(None)
                continue
            out.append(flat[i:i + t.numel()].view_as(t))
            i += t.numel()
        return out

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce-mean ``.grad`` of ``params``; a parameter without a gradient keeps none.

        A parameter no rank touched this step (a head whose task sat the step out, an encoder
        frozen for the first steps) keeps ``grad=None``, so the optimiser skips it: a zero
        gradient would still move it under Adam (momentum, weight decay) and advance its step
        count. The ranks first agree, in one small all-reduce, on which parameters some rank
        touched; those take part everywhere (zeros on the ranks that did not touch them), so
        every rank flattens the same tensors in the same order.
        """
        if not self.enabled or not params:
            return
        mask = torch.tensor([p.grad is not None for p in params], dtype=torch.float32,
                            device=params[0].device)
        dist.all_reduce(mask)
        grads = [None if not touched else p.grad if p.grad is not None else torch.zeros_like(p)
                 for p, touched in zip(params, mask.tolist())]
        for p, g in zip(params, self.average(grads)):
            p.grad = g

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Average floating buffers (batch-norm running statistics) so ranks stay identical;
        integer buffers (batch counters) are equal on every rank already."""
        if not self.enabled:
            return
        bufs = [b for b in module.buffers() if b.is_floating_point()]
        for b, avg in zip(bufs, self.average(list(bufs))):
            b.copy_(avg)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
