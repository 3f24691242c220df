"""The invariants of DESIGN §3, on the built-in implementations and the autograd oracle."""

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check.builtin import jacobian, many_to_many, many_to_one, truncated
from bptt_check.model.forward import forward
from bptt_check.oracles import AutogradOracle
from bptt_check.strategies import specs

KEYS = ("W", "U", "b", "V", "c", "h0", "x")


def _close(a, b, keys=KEYS):
    for k in keys:
        if k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-10, atol=1e-12, err_msg=k)


@settings(max_examples=30)
@given(spec=specs(truncation=st.just(bc.Truncation())), kind=st.sampled_from(["window", "tbptt", "chunk"]),
       seed=st.integers(0, 10_000), index=st.integers(0, 15))
def test_a_window_at_least_T_long_equals_full_bptt(spec, kind, seed, index):
    case = bc.draw_case(spec, seed, index)
    T = case.T
    trunc = {"window": bc.Truncation("window", max(1, T - 1 + seed % 3)),
             "tbptt": bc.Truncation("tbptt", 1 + seed % T, T + seed % 2),
             "chunk": bc.Truncation("chunk", T + seed % 2)}[kind]
    truncated_spec = spec.replace(truncation=trunc)
    full = truncated(case.params, case.x, case.y, spec)
    _close(truncated(case.params, case.x, case.y, truncated_spec), full)
    _close(jacobian(case.params, case.x, case.y, truncated_spec), full)
    case.spec = truncated_spec
    _close(AutogradOracle().gradients(case).grads, full)


@settings(max_examples=30)
@given(spec=specs(modes=["many-to-many"], reductions=["sum", "mean_batch"], truncation=st.just(bc.Truncation())),
       k=st.integers(1, 4), seed=st.integers(0, 10_000), index=st.integers(0, 15))
@example(spec=bc.Spec(bias=False), k=3, seed=0, index=0)   # T = 8: a short last chunk
def test_chunk_k_equals_chunk_by_chunk_many_to_many_with_carried_state(spec, k, seed, index):
    case = bc.draw_case(spec, seed, index)
    chunked = spec.replace(truncation=bc.Truncation("chunk", k))
    expected = truncated(case.params, case.x, case.y, chunked)
    if case.T % k == 0:   # TBPTT(k, k) is the same schedule when k divides T
        _close(truncated(case.params, case.x, case.y, spec.replace(truncation=bc.Truncation("tbptt", k, k))),
               expected)
    # run full many-to-many BPTT on each chunk, the carried state as a constant h0
    states = forward(case.params, case.x, spec).h
    total = {k_: np.zeros_like(v) for k_, v in expected.items()}
    for first in range(0, case.T, k):
        last = min(first + k, case.T)
        params = dict(case.params, h0=states[first])
        g = many_to_many(params, case.x[first:last], case.y[first:last], spec)
        for name in ("W", "U", "b", "V", "c"):
            if name in g:
                total[name] += g[name]
        total["x"][first:last] += g["x"]
        if first == 0:
            total["h0"] += g["h0"]
    _close(total, expected)


@settings(max_examples=20)
@given(spec=specs(truncation=st.just(bc.Truncation()), reductions=["sum", "mean_batch"]),
       seed=st.integers(0, 10_000))
def test_many_to_one_at_T_1_equals_many_to_many_at_T_1(spec, seed):
    case = bc.draw_case(spec.replace(mode="many-to-many"), seed, 1)   # index 1: the T = 1 flavor
    assert case.T == 1
    m2m = many_to_many(case.params, case.x, case.y, spec.replace(mode="many-to-many"))
    m2o = many_to_one(case.params, case.x, case.y[0], spec.replace(mode="many-to-one"))
    _close(m2o, m2m)


@settings(max_examples=30)
@given(spec=specs(truncation=st.sampled_from([bc.Truncation("window", 1), bc.Truncation("tbptt", 2, 2),
                                               bc.Truncation("chunk", 2), bc.Truncation("window-loss", 2, 2)])),
       seed=st.integers(0, 10_000), index=st.integers(0, 15))
def test_contributions_from_before_a_window_are_exactly_zero(spec, seed, index):
    case = bc.draw_case(spec, seed, index)
    windows = spec.windows(case.T)
    reached = np.zeros(case.T, dtype=bool)
    for w in windows:
        reached[w.start:max(w.losses) + 1] = True
    for g in (truncated(case.params, case.x, case.y, spec), AutogradOracle().gradients(case).grads):
        assert np.all(g["x"][~reached] == 0.0)
        if all(w.start > 0 for w in windows):
            assert np.all(g["h0"] == 0.0)
