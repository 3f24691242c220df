"""The one place that calls the user's backward: a :class:`Target`, for plain and adapted backwards alike.

Every call — the first, the run-twice repeat, the prefix re-runs of the evidence, the diagnosis's
extra call — goes through :meth:`Target.call`: on fresh copies of the case's arrays and Spec, under
the per-call limit, its output captured, its result read against the protocol (``read.py``), and,
for an adapted backward, its reported loss checked against the reference forward. Where the call
runs is the Target's ``isolate``: ``"process"`` (the default) in a worker process of its own
(``process.py``: a crash, a hang in C code, ``os._exit``, patched modules stay there), ``"thread"``
in this process under the limit, ``"none"`` in the caller's thread without a limit
(``call.py``). Re-runs (evidence, diagnosis) obey the limit too: after a call of the case timed out
or crashed, or once the re-runs together took one limit's worth of time, they are not made.

A misbehaving backward — it raises, hangs, crashes, returns garbage, changes its inputs, answers
differently when asked twice — becomes an *error finding* on its case, never a traceback of the
harness. The Target also knows what the backward's layout implies for the reference
(:meth:`lower`, :meth:`lift`) and where a wrong element sits in the user's arrays
(:meth:`locate`).
"""

from __future__ import annotations

import copy
import functools
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model.cases import Case
from . import process
from .adapters import Adapted, Lowered
from .call import DEFAULT_TIMEOUT, Raw, limit, run_limited, timeout_message, user_frames
from .process import DEFAULT_ISOLATE, isolation
from .read import compare_repeat, finding, materialize, mutations, read_result, tie_hint

Backward = Callable[..., Mapping[str, Any]]
PROTOCOL_CALL = "backward(params, x, y) or backward(params, x, y, spec)"
PROTOCOL = PROTOCOL_CALL + ", returning {'W': dW, 'U': dU, ...}"


@dataclass
class CallOutcome:
    """What calling the backward gave.

    ``grads``: the returned gradients as numpy arrays (copies, the user's dtype), when the result
    could be read; ``error``: ``{"kind", "message", "keys"}`` when the call is at fault (``grads``
    may still be set, e.g. for ``mutated_input`` or ``nondeterministic``); ``notes``: remarks that
    are not faults; ``stdout``: what the backward printed; ``repeat``: the second call's gradients
    when ``call(..., repeat=True)`` made one.
    """

    grads: dict[str, np.ndarray] | None = None
    error: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    stdout: str = ""
    seconds: float = 0.0
    repeat: dict[str, np.ndarray] | None = None

    @property
    def status(self) -> str:
        """``ok``, ``error`` or ``timeout``."""
        if self.error is None:
            return "ok"
        return "timeout" if self.error["kind"] == "timeout" else "error"


# ----------------------------------------------------------------- the protocol

def wants_spec(fn: Callable[..., Any]) -> bool:
    """Whether the backward takes the spec (a parameter named ``spec``, or ``**kwargs``)."""
    return takes(fn, "spec")


def takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` has a parameter called ``name`` (or ``**kwargs``)."""
    try:
        return _takes_cached(fn, name)
    except TypeError:                                # an unhashable callable
        return _takes(fn, name)


@functools.lru_cache(maxsize=256)
def _takes_cached(fn: Callable[..., Any], name: str) -> bool:
    return _takes(fn, name)


def _takes(fn: Callable[..., Any], name: str) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return name in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def keywords(fn: Callable[..., Any], case: Case) -> dict[str, Any]:
    """The keyword arguments a plain backward gets: ``spec`` and, for a padded batch, ``lengths``."""
    out: dict[str, Any] = {}
    if takes(fn, "spec"):
        out["spec"] = case.spec
    if case.lengths is not None and takes(fn, "lengths"):
        out["lengths"] = case.lengths.copy()
    return out


def signature_problem(fn: Any, *, lengths: bool = False) -> str | None:
    """Why ``fn`` cannot be called in the canonical protocol, or None (also when it cannot be told).

    ``lengths``: the cases are padded batches (``Spec.lengths``), passed as ``lengths=``.
    """
    if isinstance(fn, process.Shipped):            # loaded by name in a worker: it said so there
        return fn.problems.get(bool(lengths))
    if not callable(fn):
        return f"the backward must be callable, got {type(fn).__name__}"
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    name = getattr(fn, "__qualname__", repr(fn))
    if lengths and not isinstance(fn, Adapted) and not takes(fn, "lengths"):
        return (f"{name}{sig} has no parameter named 'lengths': with lengths=True (--lengths) every case is "
                "a padded batch, and your backward receives the per-sequence lengths as lengths=<int array (B,)>")
    args: tuple[Any, ...] = ({}, None, None)
    kwargs = {k: None for k in ("spec", "lengths") if (k == "spec" or lengths) and takes(fn, k)}
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        hint = (" (a required 'lengths' parameter: run with lengths=True / --lengths)"
                if "lengths" in sig.parameters and not lengths else "")
        return f"{name}{sig} cannot be called as {PROTOCOL_CALL} ({exc}){hint}"
    return None


def shape_error(exc: BaseException) -> bool:
    """An exception that says two arrays' shapes do not fit."""
    text = str(exc).lower()
    return isinstance(exc, (ValueError, IndexError, RuntimeError, KeyError)) and any(
        w in text for w in ("shape", "broadcast", "align", "size", "dimension", "out of bounds", "mat1"))


def _inputs(case: Case) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    return {k: v.copy() for k, v in case.params.items()}, case.x.copy(), np.array(case.y, copy=True)


# ----------------------------------------------------------------- the target

class Target:
    """A backward under test (plain, or adapted with :func:`bptt_check.adapt`), and how to call it.

    ``isolate``: ``"process"`` (a worker process of its own), ``"thread"`` (in this process, under the
    limit) or ``"none"`` (the caller's thread, no limit). A backward that cannot be sent to a worker
    process raises :class:`~bptt_check.errors.UsageError` here, before any call.
    """

    def __init__(self, backward: Backward, *, timeout: float | None = DEFAULT_TIMEOUT,
                 isolate: str = DEFAULT_ISOLATE) -> None:
        self.backward = backward
        self.isolate = isolation(isolate)
        self.timeout = limit(timeout)
        self.remote: process.Shipped | None = None
        if isinstance(backward, process.Shipped):
            self.remote = backward
        elif self.isolate == "process":
            plain = not isinstance(backward, Adapted)
            self.remote = process.ship(backward, keywords=tuple(k for k in ("spec", "lengths")
                                                                if plain and takes(backward, k)))
        self.adapted: Adapted | None = (self.remote.adapted if self.remote is not None
                                        else backward if isinstance(backward, Adapted) else None)
        self._calls = 0                  # call() made so far: the first is the case's own, later ones re-runs
        self._rerun_seconds = 0.0
        self._fault: dict[str, Any] | None = None      # a call that timed out or crashed: no more calls

    # ------------------------------------------------------------ what the layout implies

    def prepare(self, case: Case) -> Case:
        """The case as the backward can take it (an adapted layout: B = 1, one-hot inputs, …)."""
        return self.adapted.shape_case(case) if self.adapted else case

    def expected(self, case: Case) -> dict[str, tuple[int, ...]]:
        """The gradients a call returns, and their shapes (``x`` optional)."""
        if self.adapted:
            return self.adapted.expected(case)
        out = {k: tuple(v.shape) for k, v in case.params.items()}
        out["x"] = tuple(case.x.shape)
        return out

    def lower(self, case: Case, arrays: Mapping[str, Any], kind: str = "grad") -> dict[str, Any]:
        """Canonical arrays (the reference, its error estimates, element masks) -> what the backward returns."""
        return self.adapted.lower(case, arrays, kind) if self.adapted else dict(arrays)

    @property
    def linear(self) -> bool:
        """Whether what the backward returns is a linear map of the canonical gradients."""
        return self.adapted.linear if self.adapted else True

    def lift(self, case: Case, directions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Directions over what the backward returns -> directions over the canonical gradients."""
        return self.adapted.lift(case, directions) if self.adapted else dict(directions)

    def notes(self, case: Case, ref: Mapping[str, Any]) -> list[str]:
        return self.adapted.notes(case, ref) if self.adapted else []

    def locate(self, case: Case, failed: Mapping[str, Any]) -> list[str]:
        return self.adapted.locate(case, failed) if self.adapted else []

    # ------------------------------------------------------------ calling

    def _once(self, case: Case, repeat: bool = False) -> Raw:
        """One call (``repeat``: and, in a worker, the second one made right after it: ``raw.second()``)."""
        if self.remote is not None:
            keys = () if self.adapted is not None else self.remote.keywords
            return process.call(self.remote, case.params, case.x, np.asarray(case.y), case.spec, how=(
                "adapted" if self.adapted is not None else "plain"), keywords=keys, lengths=case.lengths,
                timeout=self.timeout, repeat=repeat)
        params, x, y = _inputs(case)
        passed = (dict(params), params, x, y)
        fn, adapted = self.backward, self.adapted
        kw = {} if adapted is not None else keywords(fn, case)
        spec = _own_copy(case.spec)
        if "spec" in kw:
            kw["spec"] = spec

        def body() -> Any:
            if adapted is not None:
                out = adapted.run(params, x, y, spec, case.lengths)
                return Lowered(materialize(out.grads), out.loss, out.source)
            return materialize(fn(params, x, y, **kw))

        raw = run_limited(body, None if self.isolate == "none" else self.timeout)
        raw.passed = passed
        if raw.exc is not None:
            raw.error = user_frames(raw.exc, PROTOCOL)
            raw.shape_error = shape_error(raw.exc)
        return raw

    def _failure(self, raw: Raw, which: str) -> dict[str, Any] | None:
        """The finding of a call that timed out or whose worker died (and no more calls of this case)."""
        if raw.timed_out:
            self._fault = finding("timeout", timeout_message(raw, float(self.timeout or 0), which))
        elif raw.crashed:
            self._fault = finding("crashed", raw.crashed.replace("{during}", f" during the {which}", 1))
        else:
            return None
        return self._fault

    def _skipped(self) -> dict[str, Any] | None:
        """A re-run that is not made: a call of this case timed out or crashed, or the re-runs used their time."""
        if self._fault is not None:
            what = "timed out" if self._fault["kind"] == "timeout" else "ended its worker process"
            return finding(self._fault["kind"], f"not run: an earlier call of this case {what}")
        if self.timeout is not None and self._calls > 1 and self._rerun_seconds >= self.timeout:
            return finding("timeout", f"not run: the re-runs of this case (evidence, diagnosis) took "
                                      f"{self._rerun_seconds:.3g} s, the limit per call (--timeout, timeout=) "
                                      "that they share")
        return None

    def _read(self, value: Any, case: Case) -> tuple[Any, Any, list[str], Any]:
        lowered = value if isinstance(value, Lowered) else None
        result = lowered.grads if lowered else value
        grads, error, notes = read_result(result, case, self.expected(case),
                                           self.adapted.optional() if self.adapted else ("x",))
        return grads, error, notes, lowered

    def call(self, case: Case, *, repeat: bool = False) -> CallOutcome:
        """Call the backward on copies of ``case``'s arrays and read its result; faults become findings.

        ``repeat``: call a second time on fresh copies and report a different result as
        ``nondeterministic``. Never raises for anything the backward does (KeyboardInterrupt and
        SystemExit of the harness itself pass through).
        """
        out = CallOutcome()
        self._calls += 1
        rerun = self._calls > 1
        skipped = self._skipped() if rerun else None
        if skipped is not None:
            out.error = skipped
            return out
        first = "re-run (evidence or diagnosis)" if rerun else "first call"
        began = time.perf_counter()
        try:
            return self._call(case, repeat, out, first)
        finally:
            if rerun:
                self._rerun_seconds += time.perf_counter() - began

    def _call(self, case: Case, repeat: bool, out: CallOutcome, first: str) -> CallOutcome:
        raw = self._once(case, repeat)
        try:
            return self._judge(case, repeat, out, first, raw)
        finally:
            if raw.release is not None:            # a second call the worker made and nobody read
                raw.release()

    def _judge(self, case: Case, repeat: bool, out: CallOutcome, first: str, raw: Raw) -> CallOutcome:
        out.stdout, out.seconds = raw.stdout, raw.seconds
        failure = self._failure(raw, first)
        if failure is not None:
            out.error = failure
            return out
        mutated, said = mutations(case, raw.passed)
        mutation = None
        if mutated:
            which = list(dict.fromkeys(mutated))
            mutation = finding("mutated_input", f"your backward changed {', '.join(which)} in place — "
                               + "; ".join(said) + " (work on copies: the caller's arrays must stay as they were)",
                               which)
        if raw.error is not None:
            hint = tie_hint(case) if raw.shape_error else None
            out.error = finding("exception", raw.error + (f"\n{hint}" if hint else ""))
            if mutation:
                out.notes.append("also: " + mutation["message"])
            return out
        grads, error, notes, lowered = self._read(raw.value, case)
        out.grads, out.notes = grads, notes
        if error is not None:
            out.error = error
            if mutation:
                out.notes.append("also: " + mutation["message"])
            return out
        if mutation:
            out.error = mutation
            return out
        if repeat and grads is not None:
            raw2 = raw.second() if raw.second is not None else self._once(case)
            out.seconds += raw2.seconds
            failure = self._failure(raw2, "second call, same inputs")
            if failure is not None:
                out.error = failure
                return out
            if raw2.error is not None:
                out.error = finding("nondeterministic", "the first call returned, a second call on the same inputs "
                                    "raised:\n" + raw2.error)
                return out
            grads2, error2, _, _ = self._read(raw2.value, case)
            if error2 is not None or grads2 is None:
                msg = error2["message"] if error2 else "no gradients"
                out.error = finding("nondeterministic", "the first call's result was fine, a second call on the "
                                    f"same inputs gave: {error2['kind'] if error2 else 'nothing'}: {msg}",
                                    error2["keys"] if error2 else [])
                return out
            out.repeat = grads2
            out.error, more = compare_repeat(grads, grads2, case)
            out.notes += more
        if out.error is None and lowered is not None and self.adapted is not None:
            # a forward that disagrees with the reference: the gradients are of another function
            out.error = self.adapted.check_loss(case, lowered.loss, lowered.source)
        return out


def _own_copy(spec: Any) -> Any:
    """The Spec the backward receives in this process: its own copy (editing it cannot reach the verdict)."""
    try:
        return copy.deepcopy(spec)
    except Exception:
        return spec


def invoke(backward: Backward, case: Case, *, timeout: float | None = DEFAULT_TIMEOUT,
           repeat: bool = False, isolate: str = DEFAULT_ISOLATE) -> CallOutcome:
    """Call a backward once (twice with ``repeat``) on ``case`` through a :class:`Target`."""
    target = Target(backward, timeout=timeout, isolate=isolate)
    return target.call(target.prepare(case), repeat=repeat)


def call_backward(backward: Backward, case: Case) -> Any:
    """Call a plain backward in the canonical protocol on copies of the case's arrays (no limit, no checks)."""
    params, x, y = _inputs(case)
    return backward(params, x, y, **keywords(backward, case))


__all__ = ["Target", "CallOutcome", "invoke", "call_backward", "wants_spec", "takes", "keywords",
           "signature_problem", "shape_error", "Backward", "PROTOCOL", "PROTOCOL_CALL", "DEFAULT_ISOLATE",
           "isolation"]
