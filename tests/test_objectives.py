"""Loss weighting and gradient aggregation, checked against numbers worked out by hand."""

import math

import pytest
import torch

from polyhead.objectives import AGGREGATORS, WEIGHTINGS, GradientAggregator, LossWeighting

t = torch.tensor


def split(*rows):
    """Each task's gradient [a, b] as two "parameters" of shape (1,)."""
    return [[t([a]), t([b])] for a, b in rows]


def joined(combined):
    return torch.cat([g.reshape(-1) for g in combined])


# g1 = [1, 0], g2 = [-1, 1]: <g1, g2> = -1 < 0, they conflict.
CONFLICT = split((1.0, 0.0), (-1.0, 1.0))


# ---------------------------------------------------------------- aggregation


def test_pcgrad_conflicting():
    # g1' = g1 - (<g1,g2>/|g2|^2) g2 = [1,0] + 0.5*[-1,1] = [0.5, 0.5]
    # g2' = g2 - (<g2,g1>/|g1|^2) g1 = [-1,1] + 1*[1,0]   = [0, 1]
    # sum = [0.5, 1.5] = 2*g1 + 1.5*g2
    combined, w = AGGREGATORS.build("pcgrad")(CONFLICT)
    assert torch.allclose(joined(combined), t([0.5, 1.5]))
    assert torch.allclose(w.float(), t([2.0, 1.5]))


def test_pcgrad_non_conflicting_is_sum():
    # g1 = [1, 0], g2 = [1, 1]: <g1,g2> = 1 >= 0, nothing projected, result = [2, 1].
    combined, w = AGGREGATORS.build("pcgrad")(split((1.0, 0.0), (1.0, 1.0)))
    assert torch.allclose(joined(combined), t([2.0, 1.0]))
    assert torch.allclose(w.float(), t([1.0, 1.0]))


def test_pcgrad_deterministic_for_two_tasks():
    # torchjd's PCGrad draws a random visiting order; with 2 tasks there is only one "other".
    weighting_results = set()
    for seed in range(10):
        torch.manual_seed(seed)
        weighting_results.add(tuple(AGGREGATORS.build("pcgrad", seed=seed)(CONFLICT)[1].tolist()))
    assert weighting_results == {(2.0, 1.5)}


def test_pcgrad_many_tasks_same_on_every_rank_and_leaves_global_rng_alone():
    grads = split((1.0, 0.0), (-1.0, 1.0), (0.3, -2.0))
    state = torch.get_rng_state()
    a = AGGREGATORS.build("pcgrad")(grads)[1]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # a different global RNG on "another rank"
    b = AGGREGATORS.build("pcgrad")(grads)[1]
    assert torch.equal(a, b)


def test_mgda_min_norm_point():
    # d(a) = a*g1 + (1-a)*g2 = [2a-1, 1-a]; |d|^2 = 5a^2 - 6a + 2, minimal at a = 0.6
    # -> weights [0.6, 0.4], d = [0.2, 0.4].
    combined, w = AGGREGATORS.build("mgda")(CONFLICT)
    assert torch.allclose(joined(combined), t([0.2, 0.4]), atol=1e-3)
    assert torch.allclose(w.float(), t([0.6, 0.4]), atol=1e-3)


def test_upgrad_never_conflicts():
    grads = [
        [t([1.0, 0.0]), t([[0.5]])],
        [t([-1.0, 1.0]), t([[-2.0]])],
        [t([0.2, -3.0]), None],
    ]
    combined, _ = AGGREGATORS.build("upgrad")(grads)
    flat = joined(combined)
    for task in grads:
        g = torch.cat([(x if x is not None else torch.zeros(1, 1)).reshape(-1) for x in task])
        assert float(g @ flat) >= -1e-6


def test_cagrad_c0_is_mean():
    # c = 0: no room around the mean gradient, so the result is (g1 + g2)/2 = [0, 0.5].
    combined, w = AGGREGATORS.build("cagrad", c=0.0)(CONFLICT)
    assert torch.allclose(joined(combined), t([0.0, 0.5]), atol=1e-6)


def test_sum_and_mean():
    combined, w = AGGREGATORS.build("sum")(CONFLICT)
    assert torch.allclose(joined(combined), t([0.0, 1.0])) and w.tolist() == [1.0, 1.0]
    combined, w = AGGREGATORS.build("mean")(CONFLICT)
    assert torch.allclose(joined(combined), t([0.0, 0.5])) and w.tolist() == [0.5, 0.5]


def test_none_grads_count_as_zeros():
    # Task 1 did not touch parameter 1: same as g1 = [1, 0] -> PCGrad result [0.5, 1.5].
    grads = [[t([1.0]), None], [t([-1.0]), t([1.0])]]
    combined, _ = AGGREGATORS.build("pcgrad")(grads)
    assert torch.allclose(joined(combined), t([0.5, 1.5]))
    # A parameter no task touched stays None (no gradient).
    combined, _ = AGGREGATORS.build("mean")([[t([1.0]), None], [t([2.0]), None]])
    assert combined[1] is None and torch.allclose(combined[0], t([1.5]))


def test_multidimensional_parameters():
    # Same conflicting pair laid out in 2x2 and 1x1x1 tensors; zeros add nothing to the Gramian.
    grads = [
        [t([[1.0, 0.0], [0.0, 0.0]]), t([[[0.0]]])],
        [t([[-1.0, 0.0], [0.0, 0.0]]), t([[[1.0]]])],
    ]
    combined, _ = AGGREGATORS.build("pcgrad")(grads)
    assert combined[0].shape == (2, 2) and combined[1].shape == (1, 1, 1)
    assert torch.allclose(combined[0], t([[0.5, 0.0], [0.0, 0.0]]))
    assert torch.allclose(combined[1], t([[[1.5]]]))


def test_every_aggregator_runs():
    for name in AGGREGATORS.names():
        agg = AGGREGATORS.build(name)
        assert isinstance(agg, GradientAggregator)
        combined, w = agg(CONFLICT)
        assert w.shape == (2,) and torch.isfinite(joined(combined)).all()


# ---------------------------------------------------------------- weighting


TASKS = ["asr", "speaker"]


def test_static():
    lw = WEIGHTINGS.build("static", TASKS, weights={"asr": 0.88})
    obj = lw({"asr": t(2.0), "speaker": t(3.0)}, step=0)
    assert obj["asr"].item() == pytest.approx(1.76) and obj["speaker"].item() == 3.0
    assert lw.weights() == {"asr": 0.88, "speaker": 1.0}
    with pytest.raises(ValueError):
        WEIGHTINGS.build("static", TASKS, weights={"asrr": 1.0})


def test_dynamic_equalises_and_is_detached():
    # min = 1.0: w_asr = 1/4 = 0.25, w_speaker = 1/1 = 1.0, both objectives 1.0.
    asr, spk = t(4.0, requires_grad=True), t(1.0, requires_grad=True)
    lw = WEIGHTINGS.build("dynamic", TASKS)
    obj = lw({"asr": asr, "speaker": spk}, step=0)
    assert lw.weights() == {"asr": 0.25, "speaker": 1.0}
    assert obj["asr"].item() == obj["speaker"].item() == 1.0
    # d(w*L)/dL = w exactly: no gradient flows into the weights.
    (obj["asr"] + obj["speaker"]).backward()
    assert asr.grad.item() == 0.25 and spk.grad.item() == 1.0
    assert list(lw.parameters()) == []


def test_uncertainty_bounded_below_value_and_direction():
    lw = WEIGHTINGS.build("uncertainty", TASKS)
    # s = 0, L = 2: 0.5*e^0*2 + 0.5*log(1 + e^0) = 1 + 0.5*log 2 = 1.3465736
    obj = lw({"asr": t(2.0)}, step=0)
    assert obj["asr"].item() == pytest.approx(1 + 0.5 * math.log(2))
    assert lw.weights()["asr"] == pytest.approx(0.5)
    for s in (-30.0, -5.0, -1.0, 0.0, 1.0, 5.0, 30.0):
        with torch.no_grad():
            lw.log_var["asr"].fill_(s)
        for loss in (0.0, 1e-4, 0.1, 1.0, 100.0):
            assert lw({"asr": t(loss)}, step=0)["asr"].item() >= 0.0
    # At s = 0, d/ds = -0.5*L + 0.5*sigmoid(0) = -0.5*L + 0.25:
    # L = 4 -> -1.75 (descent raises s towards log 4 > 0); L = 0.1 -> +0.2 (lowers s, log 0.1 < 0).
    for loss, expected in ((4.0, -1.75), (0.1, 0.2)):
        lw = WEIGHTINGS.build("uncertainty", TASKS)
        lw({"asr": t(loss)}, step=0)["asr"].backward()
        assert lw.log_var["asr"].grad.item() == pytest.approx(expected)


def test_dwa():
    lw = WEIGHTINGS.build("dwa", TASKS, window=2, temperature=2.0)
    # window 0 (steps 0, 1): asr 4, speaker 1; window 1 (steps 2, 3): asr 2, speaker 1.
    for step, (a, s) in enumerate([(4.0, 1.0), (4.0, 1.0), (2.0, 1.0), (2.0, 1.0)]):
        lw({"asr": t(a), "speaker": t(s)}, step=step)
        assert lw.weights() == {"asr": 1.0, "speaker": 1.0}  # fewer than two complete windows
    # r_asr = 2/4 = 0.5, r_speaker = 1/1 = 1; w = 2*softmax([0.25, 0.5]):
    # w_asr = 2/(1 + e^0.25) = 2/2.2840254 = 0.8756470, w_speaker = 2 - w_asr = 1.1243530
    obj = lw({"asr": t(2.0), "speaker": t(1.0)}, step=4)
    w = lw.weights()
    assert w["asr"] == pytest.approx(0.8756470) and w["speaker"] == pytest.approx(1.1243530)
    assert obj["asr"].item() == pytest.approx(2 * 0.8756470)


def test_gradnorm_moves_weight_to_smaller_gradient():
    W = torch.nn.Parameter(t([1.0]))
    lw = WEIGHTINGS.build("gradnorm", TASKS, lr=0.1)

    def losses():  # dL_asr/dW = 3, dL_speaker/dW = 1; losses stay constant, so r = [1, 1]
        return {"asr": 3 * W.sum(), "speaker": W.sum()}

    obj = lw(losses(), step=0, shared_params=[W])
    assert lw.weights() == {"asr": 1.0, "speaker": 1.0}
    (obj["asr"] + obj["speaker"]).backward()  # the graph survived gradnorm's own autograd.grad
    assert W.grad.item() == pytest.approx(4.0)
    # Step 1 by hand: G = [3, 1], G_avg = 2, target = [2, 2]; loss = (|3w_a-2| + |w_s-2|)/2,
    # dloss/dw = [+3/2, -1/2]; w = [1 - 0.15, 1 + 0.05] = [0.85, 1.05], sum 1.9 -> *2/1.9
    # = [0.8947368, 1.1052632].
    lw(losses(), step=1, shared_params=[W])
    w = lw.weights()
    assert w["asr"] == pytest.approx(0.8947368) and w["speaker"] == pytest.approx(1.1052632)
    for step in range(2, 20):
        lw(losses(), step=step, shared_params=[W])
        w = lw.weights()
        assert w["speaker"] > w["asr"] and sum(w.values()) == pytest.approx(2.0)
    assert list(lw.parameters()) == []  # not trained by the main optimiser


def test_gradnorm_during_heads_only_steps_keeps_its_weights():
    """The trainer passes no shared parameters while the encoder is frozen
    (train.heads_only_steps): GradNorm then weighs with what it has instead of raising."""
    W = torch.nn.Parameter(t([1.0]))
    lw = WEIGHTINGS.build("gradnorm", TASKS, lr=0.1)
    obj = lw({"asr": 3 * W.sum(), "speaker": W.sum()}, step=0, shared_params=None)
    assert lw.weights() == {"asr": 1.0, "speaker": 1.0}
    assert obj["asr"].item() == pytest.approx(3.0)
    for step in (1, 2):  # unfrozen: it learns
        lw({"asr": 3 * W.sum(), "speaker": W.sum()}, step=step, shared_params=[W])
    assert lw.weights()["speaker"] > lw.weights()["asr"]


def test_every_weighting_is_a_module():
    for name in WEIGHTINGS.names():
        assert isinstance(WEIGHTINGS.build(name, TASKS), LossWeighting)


def test_registry_rejects_unknown_names():
    with pytest.raises(ValueError, match="choose one of: .*dynamic.*static"):
        WEIGHTINGS.build("dinamic", TASKS)
    with pytest.raises(ValueError, match="choose one of: .*pcgrad.*upgrad"):
        AGGREGATORS.build("pcgard")
    with pytest.raises(TypeError):
        WEIGHTINGS.build("dwa", TASKS, windw=10)
