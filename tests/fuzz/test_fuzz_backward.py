"""Fuzzing the harness with misbehaving backwards: 0 harness crashes, every finding in the right category.

Hypothesis draws a spec, a case, a misbehaviour with its arguments (which key, which element,
which exception, dtype, noise...), and benign disguises on top (printing, another mapping type,
also changing an input in place). ``check_case`` must return (never raise), with the status and
error kind the misbehaviour calls for, a message naming what it must name, and a result that
serializes to strict JSON.

The default suite runs a fast subset; ``pytest -m slow tests/fuzz`` runs >= 1,000 fuzzed cases.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import misbehaviours as mb
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bptt_check as bc
from bptt_check.runner.read import ERROR_KINDS, clean, headline

RESULT_KINDS = ("type", "missing_key", "extra_key", "shape", "dtype", "non_finite")
HANG_LIMIT = 0.15          # seconds, for the misbehaviours that hang
CALL_LIMIT = 30.0          # for the others: generous, so a loaded machine cannot time them out
SEEN: Counter[str] = Counter()


# ----------------------------------------------------------------- specs and cases

@st.composite
def specs(draw):
    kind = draw(st.sampled_from(("none", "window", "tbptt", "chunk", "window-loss")))
    k1 = draw(st.integers(1, 3))
    k2 = draw(st.integers(k1, 4))
    truncation = {"none": "none", "window": f"window:{k1}", "tbptt": f"tbptt:{k1},{k2}",
                  "chunk": f"chunk:{k1}", "window-loss": f"window-loss:{k1},{k2}"}[kind]
    loss = draw(st.sampled_from(("half_mse", "sse", "cross_entropy")))
    output = draw(st.sampled_from(("identity", "softmax") if loss == "cross_entropy"
                                  else ("identity", "tanh", "sigmoid", "softmax")))
    return bc.Spec(mode=draw(st.sampled_from(("many-to-many", "many-to-one"))), truncation=truncation,
                   activation=draw(st.sampled_from(("tanh", "sigmoid", "identity", "relu"))), output=output,
                   loss=loss, reduction=draw(st.sampled_from(("sum", "mean", "mean_batch", "mean_time"))),
                   bias=draw(st.booleans()), dtype=draw(st.sampled_from(("float64", "float32"))))


# ----------------------------------------------------------------- misbehaviours with drawn arguments

def _key(draw, case, *, square: bool | None = None, with_x: bool = True):
    keys = [*case.params, "x"] if with_x else list(case.params)
    if square is not None:
        keys = [k for k in keys if case.params.get(k, case.x).ndim == 2
                and (case.params[k].shape[0] == case.params[k].shape[1]) == square]
        assume(keys)
    return draw(st.sampled_from(keys))


def _exceptions(draw, case):
    exc = draw(st.sampled_from((ValueError, IndexError, ZeroDivisionError, RuntimeError, AssertionError,
                                KeyError, np.linalg.LinAlgError, RecursionError, MemoryError)))
    return mb.raises(exc, late=draw(st.booleans()))


def _transposed(draw, case):
    # a square matrix transposed keeps its shape: that is a wrong value (failed), not a shape error
    return mb.transposed(_key(draw, case, square=False, with_x=False))


def _transposed_square(draw, case):
    key = _key(draw, case, square=True, with_x=False)
    g = _correct_grads(case)[key].astype(np.float64)
    assume(np.abs(g - g.T).max() > 1e-2 * np.abs(g).max())
    planted = mb.transposed(key)
    planted.status, planted.kind, planted.needles = "failed", None, ()
    return planted


def _per_step(draw, case):
    assume(case.T > 1)      # (1, H, I) for (H, I) reads as an extra axis of length 1 first
    return mb.per_time_step(_key(draw, case, with_x=False))


def _keepdims(draw, case):
    vectors = [k for k in case.params if case.params[k].ndim == 1]
    assume(vectors)                                  # b and c; none under bias=False
    return mb.keepdims(draw(st.sampled_from(vectors)))


def _correct_grads(case):
    params = {k: v.copy() for k, v in case.params.items()}
    return mb.correct(params, case.x.copy(), np.array(case.y, copy=True), case.spec)


def _stale(draw, case):
    # all-zero gradients (softmax over O = 1 output) accumulate to zero: nothing to see
    assume(any(np.any(g != 0) for g in _correct_grads(case).values()))
    return mb.stale_accumulation()


def _dtype(draw, case):
    key = _key(draw, case)
    dtype, word = draw(st.sampled_from((("int64", "integer"), ("int32", "integer"), ("uint8", "integer"),
                                        ("bool", "bool"), ("float16", "float16"), ("complex128", "complex"))))
    return mb.as_dtype(key, dtype, word)


def _torch_dtype(draw, case):
    return mb.torch_dtype(_key(draw, case), draw(st.sampled_from(("bfloat16", "float16", "int64", "bool"))))


def _poison(draw, case):
    key = _key(draw, case)
    size = (case.params[key] if key != "x" else case.x).size
    return mb.poisons(key, draw(st.integers(1, size)), draw(st.sampled_from((np.nan, np.inf, -np.inf))))


def _value(draw, case):
    value, words = draw(st.sampled_from(((None, "is None"), ("zeros", "strings"), (object(), "Python objects"),
                                         ({"a": 1}, "Python objects"))))
    return mb.value_is(_key(draw, case), value, words)


def _mutation(draw, case):
    which = draw(st.sampled_from(("sgd", "zero", "targets", "replace")))
    key = draw(st.sampled_from(list(case.params)))
    if which == "sgd":
        return mb.sgd_step(key, draw(st.floats(1e-3, 1.0)))
    if which == "zero":
        target = draw(st.sampled_from([key, "x"]))
        assume(np.any((case.x if target == "x" else case.params[target]) != 0))
        return mb.zeroes(target)
    if which == "targets":
        return mb.changes_targets()
    return mb.replaces_in_dict(key)


FAMILIES = {
    "raises": _exceptions,
    "exits": lambda d, c: mb.exits(d(st.integers(0, 3))),
    "hangs_in_python": lambda d, c: mb.hangs_in_python(),
    "hangs_on_second_call": lambda d, c: mb.hangs_on_second_call(),
    "returns_none": lambda d, c: mb.returns_none(),
    "returns_sequence": lambda d, c: mb.returns_sequence(d(st.sampled_from((tuple, list)))),
    "returns_pair": lambda d, c: mb.returns_pair_with_loss(),
    "returns_scalar": lambda d, c: mb.returns_scalar(d(st.sampled_from((0.0, 1, "grads", np.float64(2.0))))),
    "value_is": _value,
    "ragged": lambda d, c: mb.ragged_list(_key(d, c)),
    "drops": lambda d, c: mb.drops(d(st.sampled_from(list(c.params)))),
    "d_prefixed": lambda d, c: mb.d_prefixed(),
    "adds": lambda d, c: mb.adds(d(st.sampled_from(("loss", "dW", "w", "h", "cache", "grad_W")))),
    "integer_keys": lambda d, c: mb.non_string_keys(),
    "transposed": _transposed,
    "transposed_square": _transposed_square,
    "batch_major_x": lambda d, c: (assume(c.T != c.B), mb.batch_major_x())[1],
    "per_time_step": _per_step,
    "h0_summed": lambda d, c: (assume(c.B > 1), mb.h0_summed_over_batch())[1],
    "keepdims": _keepdims,
    "flattened": lambda d, c: mb.flattened(d(st.sampled_from([k for k in c.params if c.params[k].ndim == 2]))),
    "dtype": _dtype,
    "torch_dtype": _torch_dtype,
    "poison": _poison,
    "all_nan": lambda d, c: mb.all_nan(_key(d, c)),
    "inf_at_step": lambda d, c: mb.inf_in_x_at_step(d(st.integers(0, c.T - 1))),
    "mutation": _mutation,
    "stale": _stale,
    "noise": lambda d, c: mb.random_noise(d(st.floats(0.01, 1.0)), d(st.integers(0, 1000))),
    "raises_second": lambda d, c: mb.raises_on_second_call(),
    "one_ulp": lambda d, c: mb.one_ulp_on_second_call(),
    "torch": lambda d, c: mb.as_torch(d(st.booleans()), keep_dtype=True),
    "matrix": lambda d, c: mb.as_matrix(),
    "read_only": lambda d, c: mb.read_only(),
    "lists": lambda d, c: mb.nested_lists(),
    "mapping": lambda d, c: mb.other_mapping(d(st.sampled_from(("proxy", "ordered", "reversed")))),
    "prints": lambda d, c: mb.prints(d(st.text(max_size=40)) + "\nmarker-line"),
    "without_dx": lambda d, c: mb.without_dx(),
    "restores": lambda d, c: mb.works_on_inputs_in_place_then_restores(),
}
PER_FAMILY = 27            # the opt-in sweep: every family this many times
assert len(FAMILIES) * PER_FAMILY >= 1000


def _expected(planted: mb.Planted, mutated: bool) -> tuple[str, str | None]:
    """Status and kind when the backward may also change an input in place (before anything else)."""
    if not mutated:
        return planted.status, planted.kind
    if planted.kind in ("timeout", "exception", *RESULT_KINDS) and not planted.second_call:
        return planted.status, planted.kind
    return "error", "mutated_input"      # a fine first call that changed its inputs; no second call is made


@st.composite
def fuzzed(draw, families=tuple(FAMILIES)):
    spec = draw(specs())
    case = bc.draw_case(spec, draw(st.integers(0, 2**16)), draw(st.integers(0, 15)))
    family = draw(st.sampled_from(families))
    planted = FAMILIES[family](draw, case)
    mutate = None
    if planted.status != "failed" and draw(st.integers(0, 5)) == 0:
        mutate = draw(st.sampled_from(list(case.params)))
    also_print = draw(st.integers(0, 5)) == 0
    inner = planted.backward

    def backward(params, x, y, spec):
        if also_print:
            print("also printed", flush=True)
        if mutate is not None:
            params[mutate] += 1.0
        return inner(params, x, y, spec)

    return family, case, planted, backward, mutate, also_print


def _run_one(family, case, planted, backward, mutate, also_print):
    limit = HANG_LIMIT if planted.hangs else CALL_LIMIT
    start = time.perf_counter()
    result = bc.check_case(backward, case, oracles=("autograd",), timeout=limit)   # must not raise
    took = time.perf_counter() - start
    SEEN[family] += 1
    status, kind = _expected(planted, mutate is not None)
    where = f"{family} on {case.spec} {case.shapes} (mutate={mutate}): {result.summary()}"
    if status == "passed":
        assert result.status in mb.ACCEPTED, where
        assert result.error is None, where
    elif status == "failed" and result.status == "inconclusive":
        # a case whose gradients its dtype cannot resolve (a saturated output in float32) proves nothing either
        # way: the right backward is not judged on it either, and nothing reads as a pass
        right = bc.check_case(mb.correct, case, oracles=("autograd",), timeout=CALL_LIMIT, isolate="thread")
        assert right.status == "inconclusive" and "precision" in " ".join(result.notes), (where, right.summary())
    else:
        assert result.status == status, where
    if kind is None:
        assert result.error is None, where
    else:
        assert result.error is not None and result.error["kind"] == kind, where
        assert result.error["kind"] in ERROR_KINDS
        message = result.error["message"]
        if kind == planted.kind:
            for needle in planted.needles:
                assert needle in message, (needle, where, message)
        if mutate is not None and kind == "mutated_input":
            # changed in place, unless the planted fault then replaced that very entry (which is what it says)
            assert mutate in result.error["keys"] and (f"{mutate}: " in message
                                                       or f"replaced params[{mutate!r}]" in message), where
        if mutate is not None and kind not in ("mutated_input", "timeout"):
            assert any("also: your backward changed" in n and f"{mutate}: " in n for n in result.notes), \
                (where, result.notes)
        assert headline(result.error) and "\n" not in headline(result.error)
    if planted.note and mutate is None:
        assert any(planted.note in n for n in result.notes), (where, result.notes)
    if planted.stdout and mutate is None:      # what it printed is data: control characters come back escaped
        assert clean(planted.stdout) in result.stdout
        assert result.stdout == clean(result.stdout)
    if also_print and kind != "timeout":
        assert "also printed" in result.stdout
    assert "\n" not in result.summary()
    json.dumps(result.to_dict(), allow_nan=False)              # the report can always be written
    if kind == "timeout":                                      # the run goes on (no oracle was asked)
        assert took < 10 * HANG_LIMIT + 2.0, took


HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much]


@settings(max_examples=45, suppress_health_check=HEALTH)
@given(fuzzed())
def test_fuzz_fast_subset(data):
    """The default suite: 45 fuzzed cases across every family."""
    _run_one(*data)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_fuzz_sweep(family):
    """Opt-in (pytest -m slow tests/fuzz): PER_FAMILY fuzzed cases of each family, >= 1,000 in all."""
    SEEN[family] = 0

    @settings(max_examples=PER_FAMILY, suppress_health_check=HEALTH)
    @given(fuzzed(families=(family,)))
    def sweep(data):
        _run_one(*data)

    sweep()
    assert SEEN[family] >= PER_FAMILY, SEEN[family]
