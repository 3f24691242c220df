"""Misbehaving backwards, each with the finding the harness must give.

Each builder returns a :class:`Planted`: a fresh backward in the canonical protocol (built on the
correct ``truncated`` built-in, so everything but the planted fault is right) and what
``check_case`` must report: the status, the error kind, and words the message must contain.

Used three ways: the fuzz suite draws builders and their arguments with hypothesis
(``test_fuzz_backward.py``), the robustness tests run the fixed :data:`CATALOGUE`, and
``docs/gen_robustness_table.py`` turns that catalogue into the table of ``docs/robustness.md``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import time
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bptt_check.builtin import truncated as correct

ACCEPTED = ("passed", "inconclusive")


@dataclass
class Planted:
    backward: Callable[..., Any]
    status: str                       # "error", "timeout", "failed" or "passed" (passed: also inconclusive)
    kind: str | None                  # the error kind, None when accepted
    needles: tuple[str, ...] = ()     # words the error message must contain
    hangs: bool = False               # needs a short timeout
    note: str = ""                    # words one of the notes must contain
    stdout: str = ""                  # what the case's captured stdout must contain
    second_call: bool = False         # the fault shows only on a second call (after a fine first one)
    isolated: bool = False            # needs isolate="process" (in this process it would harm the harness)


@dataclass(frozen=True)
class Row:
    """One line of the catalogue (and of the docs table)."""

    behaviour: str
    build: Callable[[], Planted]
    spec: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------- helpers

def returning(transform: Callable[[dict[str, Any], dict[str, np.ndarray], np.ndarray, Any], Any],
              status: str = "error", kind: str | None = None, needles: tuple[str, ...] = (), **kw: Any) -> Planted:
    """A backward returning ``transform(grads, params, x, y)`` of the correct gradients."""
    def backward(params, x, y, spec):
        return transform(correct(params, x, y, spec), params, x, y)
    return Planted(backward, status, kind, needles, **kw)


# ----------------------------------------------------------------- crashes and hangs

def raises(exc: type[BaseException] = ValueError, late: bool = False) -> Planted:
    def backward(params, x, y, spec):
        if late:
            correct(params, x, y, spec)
        raise exc("planted failure in the backward")
    return Planted(backward, "error", "exception", (exc.__name__, "planted failure"))


def exits(code: int = 1) -> Planted:
    def backward(params, x, y, spec):
        sys.exit(code)
    return Planted(backward, "error", "exception", ("SystemExit",))


def hangs_in_python() -> Planted:
    def backward(params, x, y, spec):
        while True: pass  # noqa: E701 - one line: wherever the loop is stopped, it is at this line
    return Planted(backward, "timeout", "timeout", ("did not return within", "it was stopped"), hangs=True)


def hangs_sleeping(seconds: float = 0.6) -> Planted:
    def backward(params, x, y, spec):
        time.sleep(seconds)
        return correct(params, x, y, spec)
    return Planted(backward, "timeout", "timeout", ("did not return within", "time.sleep"), hangs=True)


def hangs_on_second_call() -> Planted:
    calls = [0]

    def backward(params, x, y, spec):
        calls[0] += 1
        while calls[0] > 1:
            time.sleep(0.05)
        return correct(params, x, y, spec)
    return Planted(backward, "timeout", "timeout", ("second call",), hangs=True, second_call=True)


# ----------------------------------------------------------------- wrong types

def returns_none() -> Planted:
    return returning(lambda g, p, x, y: None, kind="type", needles=("returned None",))


def returns_sequence(container: type = tuple) -> Planted:
    return returning(lambda g, p, x, y: container(g.values()), kind="type",
                     needles=(f"returned {container.__name__}", "dict(zip("))


def returns_pair_with_loss() -> Planted:
    return returning(lambda g, p, x, y: (g, 1.234), kind="type", needles=("first item is a mapping",))


def returns_scalar(value: Any = 0.0) -> Planted:
    return returning(lambda g, p, x, y: value, kind="type", needles=(f"returned {type(value).__name__}",))


def value_is(key: str = "U", value: Any = None, words: str = "is None") -> Planted:
    return returning(lambda g, p, x, y: {**g, key: value}, kind="type", needles=(repr(key), words))


def ragged_list(key: str = "W") -> Planted:
    return returning(lambda g, p, x, y: {**g, key: [[1.0, 2.0], [3.0]]}, kind="type",
                     needles=(repr(key), "cannot be read as an array"))


# ----------------------------------------------------------------- keys

def drops(key: str = "U") -> Planted:
    return returning(lambda g, p, x, y: {k: v for k, v in g.items() if k != key}, kind="missing_key",
                     needles=(f"missing gradient {key!r}",))


def d_prefixed() -> Planted:
    return returning(lambda g, p, x, y: {"d" + k: v for k, v in g.items()}, kind="missing_key",
                     needles=("'dW' for 'W'", "without the 'd'"))


def adds(key: str = "loss") -> Planted:
    return returning(lambda g, p, x, y: {**g, key: np.ones(1)}, kind="extra_key", needles=(repr(key),))


def biases_without_bias() -> Planted:
    """Under ``bias=False``: returns b and c anyway."""
    def backward(params, x, y, spec):
        g = correct(params, x, y, spec)
        H, O = params["U"].shape[0], params["V"].shape[0]
        return {**g, "b": np.zeros(H), "c": np.zeros(O)}
    return Planted(backward, "error", "extra_key", ("'b'", "no biases"))


def non_string_keys() -> Planted:
    return returning(lambda g, p, x, y: dict(enumerate(g.values())), kind="missing_key", needles=("'W'", "0"))


# ----------------------------------------------------------------- shapes

def transposed(key: str = "W") -> Planted:
    return returning(lambda g, p, x, y: {**g, key: g[key].T}, kind="shape",
                     needles=(repr(key), "transposed"))


def batch_major_x() -> Planted:
    return returning(lambda g, p, x, y: {**g, "x": g["x"].transpose(1, 0, 2)}, kind="shape",
                     needles=("'x'", "batch-major"))


def per_time_step(key: str = "W") -> Planted:
    def tr(g, p, x, y):
        T = x.shape[0]
        return {**g, key: np.stack([g[key] / T] * T)}
    return returning(tr, kind="shape", needles=(repr(key), "per time step"))


def h0_summed_over_batch() -> Planted:
    return returning(lambda g, p, x, y: {**g, "h0": g["h0"].sum(axis=0)}, kind="shape",
                     needles=("'h0'", "summed over the batch"))


def keepdims(key: str = "b") -> Planted:
    return returning(lambda g, p, x, y: {**g, key: g[key][None, :]}, kind="shape",
                     needles=(repr(key), "keepdims"))


def flattened(key: str = "U") -> Planted:
    return returning(lambda g, p, x, y: {**g, key: g[key].ravel()}, kind="shape", needles=(repr(key),))


# ----------------------------------------------------------------- dtypes

def as_dtype(key: str = "W", dtype: str = "int64", words: str = "integer") -> Planted:
    return returning(lambda g, p, x, y: {**g, key: g[key].astype(dtype)}, kind="dtype",
                     needles=(repr(key), words))


def torch_dtype(key: str = "W", dtype: str = "bfloat16") -> Planted:
    import torch

    return returning(lambda g, p, x, y: {**g, key: torch.from_numpy(g[key]).to(getattr(torch, dtype))},
                     kind="dtype", needles=(repr(key), dtype))


# ----------------------------------------------------------------- non-finite

def poisons(key: str = "W", count: int = 1, value: float = float("nan")) -> Planted:
    def tr(g, p, x, y):
        a = np.array(g[key], copy=True)
        flat = a.reshape(-1)
        n = min(count, flat.size)
        flat[np.arange(n) * max(1, flat.size // n)] = value
        return {**g, key: a}
    word = "nan" if np.isnan(value) else "inf"
    return returning(tr, kind="non_finite", needles=(repr(key), word, "first at"))


def all_nan(key: str = "h0") -> Planted:
    return returning(lambda g, p, x, y: {**g, key: np.full_like(g[key], np.nan)}, kind="non_finite",
                     needles=(repr(key), "all nan"))


def inf_in_x_at_step(step: int = 0) -> Planted:
    def tr(g, p, x, y):
        a = np.array(g["x"], copy=True)
        a[min(step, a.shape[0] - 1)] = np.inf
        return {**g, "x": a}
    return returning(tr, kind="non_finite", needles=("'x'", "inf", "time step"))


# ----------------------------------------------------------------- in place

def sgd_step(key: str = "W", lr: float = 0.1) -> Planted:
    def backward(params, x, y, spec):
        g = correct(params, x, y, spec)
        params[key] -= lr * g[key] + lr      # a parameter update inside the backward
        return g
    return Planted(backward, "error", "mutated_input", ("your backward changed", "in place", f"{key}: "))


def zeroes(which: str = "x") -> Planted:
    def backward(params, x, y, spec):
        g = correct(params, x, y, spec)
        (x if which == "x" else params[which])[...] = 0
        return g
    return Planted(backward, "error", "mutated_input", ("in place", f"{which}: ", "all zeros"))


def changes_targets() -> Planted:
    def backward(params, x, y, spec):
        g = correct(params, x, y, spec)
        y += 1
        return g
    return Planted(backward, "error", "mutated_input", ("in place", "y: "))


def replaces_in_dict(key: str = "U") -> Planted:
    def backward(params, x, y, spec):
        g = correct(params, x, y, spec)
        params[key] = params[key] * 2.0
        return g
    return Planted(backward, "error", "mutated_input", (f"replaced params[{key!r}]",))


# ----------------------------------------------------------------- a second call

def stale_accumulation() -> Planted:
    acc: dict[str, np.ndarray] = {}

    def backward(params, x, y, spec):
        g = correct(params, x, y, spec)
        for k, v in g.items():
            acc[k] = acc[k] + v if k in acc else v.copy()
        return {k: v.copy() for k, v in acc.items()}
    return Planted(backward, "error", "nondeterministic", ("second call", "2× the first", "not zeroed"),
                   second_call=True)


def random_noise(rel: float = 0.05, seed: int = 0) -> Planted:
    rng = np.random.default_rng(seed)

    def backward(params, x, y, spec):
        g = correct(params, x, y, spec)
        return {k: v + (rel * (np.abs(v).max() + 1.0) * rng.standard_normal(v.shape)).astype(v.dtype)
                for k, v in g.items()}
    return Planted(backward, "error", "nondeterministic", ("second call", "differ"), second_call=True)


def raises_on_second_call() -> Planted:
    calls = [0]

    def backward(params, x, y, spec):
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("cache already consumed")
        return correct(params, x, y, spec)
    return Planted(backward, "error", "nondeterministic", ("second call", "RuntimeError"), second_call=True)


def one_ulp_on_second_call() -> Planted:
    calls = [0]

    def backward(params, x, y, spec):
        calls[0] += 1
        g = correct(params, x, y, spec)
        if calls[0] % 2 == 0:
            g = {k: np.nextafter(v, np.inf) for k, v in g.items()}
        return g
    return Planted(backward, "passed", None, note="not bit-for-bit reproducible", second_call=True)


# ----------------------------------------------------------------- accepted

def as_torch(requires_grad: bool = True, keep_dtype: bool = True) -> Planted:
    import torch

    def tr(g, p, x, y):
        out = {}
        for k, v in g.items():
            t = torch.tensor(v, dtype=getattr(torch, str(v.dtype)) if keep_dtype else torch.float64)
            out[k] = t.requires_grad_(requires_grad) if requires_grad else t
        return out
    return returning(tr, status="passed")


def as_matrix() -> Planted:
    def tr(g, p, x, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)   # np.matrix is discouraged, still used
            return {k: np.matrix(v) if v.ndim <= 2 else v for k, v in g.items()}
    return returning(tr, status="passed")


def read_only() -> Planted:
    def tr(g, p, x, y):
        for v in g.values():
            v.setflags(write=False)
        return g
    return returning(tr, status="passed")


def nested_lists() -> Planted:
    return returning(lambda g, p, x, y: {k: v.tolist() for k, v in g.items()}, status="passed")


def other_mapping(kind: str = "proxy") -> Planted:
    wrap = {"proxy": types.MappingProxyType, "ordered": OrderedDict,
            "reversed": lambda d: dict(reversed(list(d.items())))}[kind]
    return returning(lambda g, p, x, y: wrap(g), status="passed")


def prints(text: str = "loss = 0.123\ncase 0 PASSED (this line is not the harness's)") -> Planted:
    def backward(params, x, y, spec):
        print(text)
        return correct(params, x, y, spec)
    return Planted(backward, "passed", None, stdout=text.splitlines()[0])


def without_dx() -> Planted:
    return returning(lambda g, p, x, y: {k: v for k, v in g.items() if k != "x"}, status="passed")


def works_on_inputs_in_place_then_restores() -> Planted:
    def backward(params, x, y, spec):
        saved = params["W"].copy()
        params["W"] *= 2.0
        params["W"][...] = saved
        return correct(params, x, y, spec)
    return Planted(backward, "passed", None)


# ----------------------------------------------------------------- hostile (issue 13: the worker process holds them)

def exits_hard(code: int = 0) -> Planted:
    def backward(params, x, y, spec):
        print("leaving now")
        os._exit(code)
    return Planted(backward, "error", "crashed", (f"exit code {code}", "leaving now"), isolated=True)


def segfaults() -> Planted:
    def backward(params, x, y, spec):
        import ctypes

        return ctypes.string_at(0)                 # reads address 0: SIGSEGV
    return Planted(backward, "error", "crashed", ("SIGSEGV", "it was at", "string_at"), isolated=True)


def holds_the_gil() -> Planted:
    def backward(params, x, y, spec):
        re.match(r"(a+)+$", "a" * 64 + "b")       # catastrophic backtracking inside the regex engine, GIL held
        return correct(params, x, y, spec)
    return Planted(backward, "timeout", "timeout", ("did not return within", "killed", "re.match"), hangs=True,
                   isolated=True)


def prints_from_a_thread(seconds: float = 1.0) -> Planted:
    def spam(started):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            print("spam from a thread")
            started.set()

    def backward(params, x, y, spec):
        started = threading.Event()
        threading.Thread(target=spam, args=(started,), daemon=True).start()
        started.wait(5)
        return correct(params, x, y, spec)
    return Planted(backward, "passed", None, isolated=True)


def leaves_a_thread(seconds: float = 2.0) -> Planted:
    def backward(params, x, y, spec):
        threading.Thread(target=time.sleep, args=(seconds,)).start()      # not a daemon
        return correct(params, x, y, spec)
    return Planted(backward, "passed", None)


def changes_directory() -> Planted:
    def backward(params, x, y, spec):
        os.chdir(tempfile.gettempdir())
        return correct(params, x, y, spec)
    return Planted(backward, "passed", None, isolated=True)


def closes_stdout() -> Planted:
    def backward(params, x, y, spec):
        sys.stdout.close()
        try:
            os.close(1)
        except OSError:
            pass
        print("printing on")
        return correct(params, x, y, spec)
    return Planted(backward, "passed", None, stdout="printing on", isolated=True)


def meta_device() -> Planted:
    def backward(params, x, y, spec):
        import torch

        torch.set_default_device("meta")
        return correct(params, x, y, spec)
    return Planted(backward, "passed", None, isolated=True)


def low_recursion_limit() -> Planted:
    def backward(params, x, y, spec):
        g = correct(params, x, y, spec)
        sys.setrecursionlimit(60)
        return g
    return Planted(backward, "passed", None, isolated=True)


class _Unshowable:
    def __repr__(self):
        raise RuntimeError("no repr")

    def __hash__(self):
        raise RuntimeError("no hash")

    def __eq__(self, other):
        raise RuntimeError("no eq")


class _OddMapping(Mapping):
    def __init__(self, grads):
        self.grads = grads

    def __getitem__(self, key):
        return self.grads[key]

    def __len__(self):
        return len(self.grads) + 1

    def __iter__(self):
        return iter(self.grads)

    def items(self):
        return [*self.grads.items(), (_Unshowable(), 1.0)]


def unshowable_key() -> Planted:
    return returning(lambda g, p, x, y: _OddMapping(g), kind="extra_key", needles=("whose repr() raised",))


def odd_text() -> Planted:
    def backward(params, x, y, spec):
        raise ValueError("bad \udc80 text \x1b[2J\x1b[31mred\x07")
    return Planted(backward, "error", "exception", ("\\udc80", "red\\x07"))


def huge_message(size: int = 20_000_000) -> Planted:
    def backward(params, x, y, spec):
        raise ValueError("x" * size)
    return Planted(backward, "error", "exception", ("not kept ...]", "ValueError"))


def patches_and_is_wrong() -> Planted:
    def backward(params, x, y, spec):
        import bptt_check.model.tolerance as tolerance
        import bptt_check.runner.read as read

        np.abs = lambda a, *args, **kwargs: a * 0
        tolerance.allowed = lambda *args, **kwargs: float("inf")
        read.compare_repeat = lambda *args, **kwargs: (None, [])
        return {k: 2 * v for k, v in correct(params, x, y, spec).items()}
    return Planted(backward, "failed", None, isolated=True)


def edits_the_spec() -> Planted:
    def backward(params, x, y, spec):
        from bptt_check import Truncation

        object.__setattr__(spec, "truncation", Truncation())       # full BPTT, under a window:2 spec
        return correct(params, x, y, spec)
    return Planted(backward, "failed", None)


def closes_descriptors() -> Planted:
    def backward(params, x, y, spec):
        os.closerange(3, 4096)                 # the worker's channel to the harness among them
        return correct(params, x, y, spec)
    return Planted(backward, "error", "crashed", ("died",), isolated=True)


def raises_base(kind: str = "GeneratorExit") -> Planted:
    class Stop(BaseException):
        pass

    exc = GeneratorExit if kind == "GeneratorExit" else Stop

    def backward(params, x, y, spec):
        raise exc("stop")
    return Planted(backward, "error", "exception", (exc.__name__,))


# ----------------------------------------------------------------- the catalogue (docs table)

CATALOGUE: tuple[Row, ...] = (
    Row("raises an exception", lambda: raises(ValueError)),
    Row("calls `sys.exit()`", lambda: exits(3)),
    Row("hangs in a Python loop", hangs_in_python),
    Row("hangs in a blocking call (`time.sleep`)", hangs_sleeping),
    Row("hangs on the second call only", hangs_on_second_call),
    Row("returns `None`", returns_none),
    Row("returns a tuple of gradients", returns_sequence),
    Row("returns `(grads, loss)`", returns_pair_with_loss),
    Row("returns a scalar", returns_scalar),
    Row("a gradient is `None`", value_is),
    Row("a gradient is a string", lambda: value_is("b", "zeros", "array of")),
    Row("a gradient is a ragged list", ragged_list),
    Row("a key is missing", drops),
    Row("keys named `dW`, `dU`, …", d_prefixed),
    Row("keys are integers", non_string_keys),
    Row("an extra key (`loss`)", adds),
    Row("returns `b`, `c` under `--no-bias`", biases_without_bias, {"bias": False}),
    Row("`W` transposed", transposed),
    Row("`x` batch-major `(B, T, I)`", batch_major_x),
    Row("`dW` per time step `(T, H, I)`", per_time_step),
    Row("`dh0` summed over the batch", h0_summed_over_batch),
    Row("`db` with `keepdims` `(1, H)`", keepdims),
    Row("`dU` flattened", flattened),
    Row("integer dtype", as_dtype),
    Row("bool dtype", lambda: as_dtype("c", "bool", "bool")),
    Row("float16", lambda: as_dtype("U", "float16", "float16")),
    Row("torch bfloat16", torch_dtype),
    Row("complex dtype", lambda: as_dtype("V", "complex128", "complex")),
    Row("nan in a gradient", lambda: poisons("W", 2)),
    Row("inf in `dx` at a time step", lambda: inf_in_x_at_step(1)),
    Row("all nan", all_nan),
    Row("updates `W` in place (an SGD step)", sgd_step),
    Row("zeroes `x` in place", zeroes),
    Row("changes the targets `y` in place", changes_targets),
    Row("replaces `params['U']` in the dict", replaces_in_dict),
    Row("accumulates into buffers kept between calls", stale_accumulation),
    Row("adds random noise", random_noise),
    Row("raises on the second call only", raises_on_second_call),
    Row("differs by 1 ulp on a second call", one_ulp_on_second_call),
    Row("returns torch tensors requiring grad", as_torch),
    Row("returns numpy matrices", as_matrix),
    Row("returns read-only arrays", read_only),
    Row("returns nested lists", nested_lists),
    Row("returns a read-only mapping (`MappingProxyType`)", other_mapping),
    Row("prints to stdout", prints),
    Row("omits `x` (dL/dx is optional)", without_dx),
    Row("changes `W` and restores it before returning", works_on_inputs_in_place_then_restores),
    # hostile: what the worker process holds (issue 13)
    Row("calls `os._exit(0)`", exits_hard),
    Row("crashes in C code (a segfault)", segfaults),
    Row("holds the GIL in C code past the limit (a catastrophic regex)", holds_the_gil),
    Row("starts a thread that prints", prints_from_a_thread),
    Row("leaves a non-daemon thread running", leaves_a_thread),
    Row("changes the working folder (`os.chdir`)", changes_directory),
    Row("closes `sys.stdout` and file descriptor 1", closes_stdout),
    Row("calls `torch.set_default_device('meta')`", meta_device),
    Row("lowers the recursion limit (`sys.setrecursionlimit(60)`)", low_recursion_limit),
    Row("returns a key whose `__repr__`, `__hash__` and `__eq__` raise", unshowable_key),
    Row("raises with a lone surrogate and terminal escapes in its message", odd_text),
    Row("raises with a 20 MB message", huge_message),
    Row("patches numpy and the harness, and is wrong", patches_and_is_wrong),
    Row("edits the Spec it receives (`window:2` into full BPTT)", edits_the_spec, {"truncation": "window:2"}),
    Row("closes every file descriptor (its channel to the harness too)", closes_descriptors),
    Row("raises `GeneratorExit`", raises_base),
    Row("raises its own `BaseException`", lambda: raises_base("Stop")),
)
