"""Gradient aggregation: combine per-task gradients on the shared parameters into one.

Each method is one class registered by name in ``AGGREGATORS``. Input: per task, the list of
per-parameter gradients on the shared parameters (None where a task did not touch a parameter,
meaning zeros). Output: the combined per-parameter gradients and the task weights used.

Every method here is a weighting of the task gradients, sum_i w_i g_i, with w computed from the
m x m Gramian G_ij = <g_i, g_j> by a torchjd *Weighting*. We never build the [tasks x all shared
parameters] matrix that the papers' code flattened (~0.38 GB per task for wav2vec2-base, and the
cause of "PCGrad out of memory" reports): the Gramian is accumulated parameter by parameter and
the weights are applied parameter by parameter.

Data parallelism: the trainer all-reduces (averages) each task's gradients across ranks BEFORE
calling the aggregator, so every rank sees the same Gramian, computes identical weights and takes
the same step. Aggregating locally and averaging afterwards would be a different (and
rank-dependent) method.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchjd import aggregation as jd

from polyhead.registry import Registry

AGGREGATORS = Registry("gradient aggregator")

Grads = list[list[Tensor | None]]


def gramian(grads: Grads) -> Tensor:
    """G_ij = sum over parameters of <g_i, g_j>, accumulated in float64 (bf16/fp32 dot products
    over millions of entries lose the precision that projection methods depend on)."""
    m = len(grads)
    first = next((g for task in grads for g in task if g is not None), None)
    device = first.device if first is not None else None
    out = torch.zeros(m, m, dtype=torch.float64, device=device)
    for p in range(len(grads[0])):
        present = [i for i in range(m) if grads[i][p] is not None]
        if not present:
            continue
        # Only one parameter's rows at a time: memory is m x (largest parameter), not m x all.
        rows = torch.stack([grads[i][p].detach().reshape(-1).double() for i in present])
        idx = torch.tensor(present, device=device)
        out[idx[:, None], idx] += rows @ rows.T
    return out


def combine(grads: Grads, weights: Tensor) -> list[Tensor | None]:
    """sum_i w_i g_i for each parameter; None where no task produced a gradient."""
    w = weights.tolist()
    out: list[Tensor | None] = []
    for p in range(len(grads[0])):
        acc = None
        for i, task in enumerate(grads):
            g = task[p]
            if g is None:
                continue
            acc = g * w[i] if acc is None else acc.add_(g, alpha=w[i])
        out.append(acc)
    return out


class GradientAggregator:
    """Base: subclasses set ``self.weighting`` (a torchjd Weighting on the Gramian) or override
    ``task_weights``."""

    weighting: torch.nn.Module

    def __call__(self, grads: Grads) -> tuple[list[Tensor | None], Tensor]:
        if not grads:
            raise ValueError("no task gradients to aggregate")
        if len({len(task) for task in grads}) != 1:
            raise ValueError("every task must give one entry (tensor or None) per shared parameter")
        weights = self.task_weights(grads).detach()
        return combine(grads, weights), weights

    def task_weights(self, grads: Grads) -> Tensor:
        return self.weighting(gramian(grads))

    def state_dict(self) -> dict:
        """Plain values a resumed run needs to aggregate as an unbroken one would."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@AGGREGATORS.register("sum")
class SumAggregator(GradientAggregator):
    """Plain sum, what one backward of the summed objectives gives; needs no Gramian."""

    def task_weights(self, grads: Grads) -> Tensor:
        return torch.ones(len(grads), dtype=torch.float64)


@AGGREGATORS.register("mean")
class MeanAggregator(GradientAggregator):
    """Average of the task gradients (the papers' disjoint step); needs no Gramian."""

    def task_weights(self, grads: Grads) -> Tensor:
        return torch.full((len(grads),), 1.0 / len(grads), dtype=torch.float64)


@AGGREGATORS.register("pcgrad")
class PCGradAggregator(GradientAggregator):
    """Yu et al. 2020 (PCGrad): project each gradient off the others it conflicts with, then sum.

    PCGrad visits the other tasks in random order. torchjd draws that order from the global CPU
    RNG, which would (a) perturb the training RNG stream and (b) differ between ranks. We fork
    the RNG and seed it from a call counter, so the order still varies per step but is identical
    on every rank. With 2 tasks the order does not matter at all.
    """

    def __init__(self, seed: int = 0):
        self.weighting = jd.PCGradWeighting()
        self.seed, self.calls = int(seed), 0

    def task_weights(self, grads: Grads) -> Tensor:
        g = gramian(grads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + self.calls)
            self.calls += 1
            return self.weighting(g)

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state.get("calls", 0))


@AGGREGATORS.register("cagrad")
class CAGradAggregator(GradientAggregator):
    """Liu et al. 2021 (CAGrad): best worst-case improvement within radius c of the mean."""

    def __init__(self, c: float = 0.4):
        self.weighting = jd.CAGradWeighting(c=c)


@AGGREGATORS.register("mgda")
class MGDAAggregator(GradientAggregator):
    """Desideri 2012 / Sener & Koltun 2018 (MGDA): min-norm point of the gradients' convex hull."""

    def __init__(self, epsilon: float = 0.001, max_iters: int = 100):
        self.weighting = jd.MGDAWeighting(epsilon=epsilon, max_iters=max_iters)


@AGGREGATORS.register("upgrad")
class UPGradAggregator(GradientAggregator):
    """Quinton & Rey 2024 (UPGrad, torchjd): average of projections onto the dual cone, so the
    result never conflicts with any task gradient."""

    def __init__(self):
        self.weighting = jd.UPGradWeighting()


@AGGREGATORS.register("imtlg")
class IMTLGAggregator(GradientAggregator):
    """Liu et al. 2021 (IMTL-G): equal projection of the result onto every task gradient."""

    def __init__(self):
        self.weighting = jd.IMTLGWeighting()


@AGGREGATORS.register("aligned_mtl")
class AlignedMTLAggregator(GradientAggregator):
    """Senushkin et al. 2023 (Aligned-MTL): align the gradients' principal components."""

    def __init__(self):
        self.weighting = jd.AlignedMTLWeighting()
