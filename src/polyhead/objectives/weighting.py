"""Loss weighting: turn per-task losses into per-task objectives (weighted losses).

Each method is one class registered by name in ``WEIGHTINGS`` and picked by config. A method
returns a dict of scalar objectives whose gradient w.r.t. the model is ``weight_i * dL_i``; the
trainer sums them for a plain step or hands each one to a gradient aggregator. A method with
learnable parameters (``uncertainty``) adds its regulariser into its task's entry, so the
trainer's optimiser trains it through the ordinary backward pass.

``losses`` may hold only some of the tasks (a step where a task had no batch); methods weight
whatever is present.

Under data parallelism the weights must be the same on every rank (they scale the gradients
that are then averaged): methods that weigh by loss values or gradient norms use the values
averaged over the ranks (``all_mean``, a no-op in one process), so they weigh the global batch.
"""

from __future__ import annotations

import abc

import math

import torch
from torch import Tensor

from polyhead.registry import Registry
from polyhead.collectives import all_mean

WEIGHTINGS = Registry("loss weighting")


class LossWeighting(torch.nn.Module, abc.ABC):
    """Base class: ``forward(losses, step, shared_params) -> objectives``; ``weights()`` logs."""

    def __init__(self, tasks: list[str], **options):
        super().__init__()
        if options:  # catch config typos instead of silently ignoring them
            raise TypeError(f"{type(self).__name__} got unknown options: {sorted(options)}")
        if not tasks:
            raise ValueError("loss weighting needs at least one task")
        self.tasks = list(tasks)
        self._last = {t: 1.0 for t in self.tasks}

    @abc.abstractmethod
    def forward(
        self,
        losses: dict[str, Tensor],
        step: int,
        shared_params: list[torch.nn.Parameter] | None = None,
    ) -> dict[str, Tensor]:
        """Per-task objectives whose sum (or aggregation) is the training objective."""

    def weights(self) -> dict[str, float]:
        """The weights used in the last ``forward``, for logging."""
        return dict(self._last)

    def _check(self, losses: dict[str, Tensor]) -> None:
        unknown = set(losses) - set(self.tasks)
        if unknown:
            raise KeyError(f"losses for unknown tasks {sorted(unknown)}; known: {self.tasks}")

    @staticmethod
    def _global_values(losses: dict[str, Tensor]) -> dict[str, float]:
        """Detached loss values averaged over the ranks, in one all-reduce."""
        values = all_mean(torch.stack([loss.detach().float() for loss in losses.values()]))
        return dict(zip(losses, values.tolist()))

    def _weigh(self, losses: dict[str, Tensor], weights: dict[str, float]) -> dict[str, Tensor]:
        self._last.update(weights)
        return {t: weights[t] * loss for t, loss in losses.items()}


@WEIGHTINGS.register("static")
class StaticWeighting(LossWeighting):
    """Fixed weights (paper 1, eq. 4); tasks not named weigh 1.0."""

    def __init__(self, tasks: list[str], weights: dict[str, float] | None = None):
        super().__init__(tasks)
        weights = dict(weights or {})
        unknown = set(weights) - set(self.tasks)
        if unknown:
            raise ValueError(f"static weights for unknown tasks {sorted(unknown)}")
        self.fixed = {t: float(weights.get(t, 1.0)) for t in self.tasks}
        self._last = dict(self.fixed)

    def forward(self, losses, step, shared_params=None):
        self._check(losses)
        return self._weigh(losses, {t: self.fixed[t] for t in losses})


@WEIGHTINGS.register("dynamic")
class DynamicWeighting(LossWeighting):
    """Vaessen & van Leeuwen (paper 1, eqs. 6-7): w_i = min_j L_j / L_i, so weighted losses match.

    The weights are computed on detached values: the paper keeps their computation out of the
    graph, otherwise w_i * L_i = min_j L_j would send no gradient through L_i at all.
    """

    def forward(self, losses, step, shared_params=None):
        self._check(losses)
        values = self._global_values(losses)
        smallest = min(values.values())
        # The clamp only avoids 0/0 when a loss is exactly zero (then every weight is 0 anyway).
        return self._weigh(losses, {t: smallest / max(v, 1e-12) for t, v in values.items()})


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(LossWeighting):
    """Kendall et al. 2018, homoscedastic uncertainty: learnable log-variance s_i per task.

    Kendall's objective is 0.5*exp(-s)*L + 0.5*s. Its minimum over s (at s = log L) is
    0.5 + 0.5*log(L), which is negative once L < 1/e, and the total then keeps falling as s -> -inf
    is pushed by small losses; users report the loss going negative. We replace the regulariser
    0.5*s by 0.5*log(1 + exp(s)) (softplus: ~s for large s, in the spirit of Liebel & Koerner 2018):
    both terms are then >= 0, so the objective is bounded below by 0 for non-negative losses, and
    the optimum s still grows with L. s_i is a Parameter, trained by the trainer's optimiser.
    """

    def __init__(self, tasks: list[str], init: float = 0.0):
        super().__init__(tasks)
        self.log_var = torch.nn.ParameterDict(
            {t: torch.nn.Parameter(torch.tensor(float(init))) for t in self.tasks}
        )
        self._last = {t: 0.5 * math.exp(-init) for t in self.tasks}

    def forward(self, losses, step, shared_params=None):
        self._check(losses)
        objectives = {}
        for t, loss in losses.items():
            s = self.log_var[t]
            precision = 0.5 * torch.exp(-s)
            objectives[t] = precision * loss + 0.5 * torch.nn.functional.softplus(s)
            self._last[t] = float(precision.detach())
        return objectives


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(LossWeighting):
    """Liu et al. 2019 (DWA): w = n_tasks * softmax(r / T), r_i = mean L_i(window t-1) / (t-2).

    Windows of ``window`` steps replace the paper's epochs. Equal weights until two windows are
    complete. A task absent from either window gets r = 1.
    """

    def __init__(self, tasks: list[str], window: int = 100, temperature: float = 2.0):
        super().__init__(tasks)
        if window < 1 or temperature <= 0:
            raise ValueError("dwa needs window >= 1 and temperature > 0")
        self.window, self.temperature = int(window), float(temperature)
        self._index: int | None = None  # window currently being accumulated
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._means: list[dict[str, float]] = []  # the last two completed windows
        self._w = {t: 1.0 for t in self.tasks}

    def forward(self, losses, step, shared_params=None):
        self._check(losses)
        index = step // self.window
        if self._index is not None and index != self._index:
            self._close_window()
        self._index = index
        for t, value in self._global_values(losses).items():
            if not math.isfinite(value):  # a step the trainer skips must not poison the window
                continue
            self._sums[t] = self._sums.get(t, 0.0) + value
            self._counts[t] = self._counts.get(t, 0) + 1
        return self._weigh(losses, {t: self._w[t] for t in losses})

    # The windows are plain Python values, outside parameters and buffers: they travel in
    # the state dict as "extra state", so a resumed run weighs exactly as an unbroken one.
    def get_extra_state(self) -> dict:
        return {"index": self._index, "sums": dict(self._sums), "counts": dict(self._counts),
                "means": [dict(m) for m in self._means], "w": dict(self._w), "last": dict(self._last)}

    def set_extra_state(self, state: dict) -> None:
        self._index = state["index"]
        self._sums, self._counts = dict(state["sums"]), dict(state["counts"])
        self._means = [dict(m) for m in state["means"]]
        self._w, self._last = dict(state["w"]), dict(state["last"])

    def _close_window(self) -> None:
        means = {t: self._sums[t] / self._counts[t] for t in self._sums}
        self._means = (self._means + [means])[-2:]
        self._sums, self._counts = {}, {}
        if len(self._means) == 2:
            older, newer = self._means
            r = torch.tensor(
                [newer[t] / older[t] if t in newer and older.get(t, 0) > 0 else 1.0
                 for t in self.tasks],
                dtype=torch.float64,
            )
            w = len(self.tasks) * torch.softmax(r / self.temperature, dim=0)
            self._w = dict(zip(self.tasks, w.tolist()))


@WEIGHTINGS.register("gradnorm")
class GradNorm(LossWeighting):
    """Chen et al. 2018 (GradNorm): learn weights so that task gradient norms on the last shared
    layer, G_i = w_i * ||dL_i/dW||, approach G_avg * r_i^alpha (r_i = relative inverse training
    rate). The weights are a buffer, not a Parameter: they are updated here by their own plain
    gradient step, never by the main loss or the trainer's optimiser (nor its weight decay).
    """

    def __init__(self, tasks: list[str], alpha: float = 1.5, lr: float = 0.025):
        super().__init__(tasks)
        self.alpha, self.lr = float(alpha), float(lr)
        self.register_buffer("w", torch.ones(len(self.tasks)))
        self.register_buffer("initial_loss", torch.full((len(self.tasks),), float("nan")))

    def forward(self, losses, step, shared_params=None):
        """``shared_params`` None: the shared layers are frozen (heads-only steps), so there is
        no shared gradient to balance and the weights stay as they are."""
        self._check(losses)
        idx = [self.tasks.index(t) for t in losses]
        current = {t: float(self.w[i]) for t, i in zip(losses, idx)}
        if (shared_params is not None and torch.is_grad_enabled()
                and all(loss.requires_grad for loss in losses.values())):
            self._update(list(losses.values()), idx, list(shared_params))
        return self._weigh(losses, current)

    def _update(self, losses: list[Tensor], idx: list[int], params: list[Tensor]) -> None:
        values = all_mean(torch.stack([loss.detach().float() for loss in losses]).to(self.w.device))
        # ||dL_i/dW|| of the global batch: the norm of the rank-averaged gradient (one
        # all-reduce of [tasks x |W|]), so every rank takes the same step on w.
        # retain_graph keeps the graph alive for the trainer's backward.
        grads = []
        for loss in losses:
            per_param = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            # zeros where the task skips a parameter of W
            grads.append(torch.cat([(g if g is not None else torch.zeros_like(p)).detach().float().reshape(-1)
                                    for g, p in zip(per_param, params)]).to(self.w.device))
        norms = all_mean(torch.stack(grads)).norm(dim=1)
        if not (torch.isfinite(values).all() and torch.isfinite(norms).all()):
            return  # a step the trainer skips must not poison the weights (or L_i(0))
        for k, i in enumerate(idx):  # L_i(0): the first loss seen for each task
            if torch.isnan(self.initial_loss[i]):
                self.initial_loss[i] = values[k]

        w = self.w[idx].clone().requires_grad_(True)
        g = w * norms
        g_avg = g.mean().detach()
        ratio = values / self.initial_loss[idx].clamp_min(1e-12)
        target = (g_avg * (ratio / ratio.mean()) ** self.alpha).detach()
        # Dividing by the (constant) mean norm makes lr a relative step size: the raw L1 loss
        # scales with the gradient norms, which differ by orders of magnitude between models.
        gradnorm_loss = (g - target).abs().sum() / g_avg.clamp_min(1e-12)
        (grad,) = torch.autograd.grad(gradnorm_loss, w)
        with torch.no_grad():
            total = self.w[idx].sum()
            new = (self.w[idx] - self.lr * grad).clamp_min(1e-4)  # weights stay positive
            self.w[idx] = new * total / new.sum()  # renormalise: sum stays n_tasks
