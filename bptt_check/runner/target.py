"""The one place that calls the user's backward: a :class:`Target`, for plain and adapted backwards alike.

Every call — the first, the run-twice repeat, the prefix re-runs of the evidence, the diagnosis's
extra call — goes through :meth:`Target.call`: on fresh copies of the case's arrays, under the
per-call limit, its output captured (``call.py``), its result read against the protocol
(``read.py``), and, for an adapted backward, its reported loss checked against the reference
forward. A misbehaving backward — it raises, hangs, returns garbage, changes its inputs, answers
differently when asked twice — becomes an *error finding* on its case, never a traceback of the
harness. The Target also knows what the backward's layout implies for the reference
(:meth:`lower`, :meth:`lift`) and where a wrong element sits in the user's arrays
(:meth:`locate`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model.cases import Case
from .adapters import Adapted, Lowered
from .call import DEFAULT_TIMEOUT, limit, run_limited, timeout_message, user_frames
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


def _shape_error(exc: BaseException) -> bool:
    """An exception that says two arrays' shapes do not fit."""
    text = str(exc).lower()
    return isinstance(exc, (ValueError, IndexError, RuntimeError, KeyError)) and any(
        w in text for w in ("shape", "broadcast", "align", "size", "dimension", "out of bounds", "mat1"))


def _inputs(case: Case) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    return {k: v.copy() for k, v in case.params.items()}, case.x.copy(), np.array(case.y, copy=True)


# ----------------------------------------------------------------- the target

class Target:
    """A backward under test (plain, or adapted with :func:`bptt_check.adapt`), and how to call it."""

    def __init__(self, backward: Backward, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.backward = backward
        self.adapted: Adapted | None = backward if isinstance(backward, Adapted) else None
        self.timeout = limit(timeout)

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

    def _once(self, case: Case) -> tuple[Any, tuple[Any, ...]]:
        params, x, y = _inputs(case)
        passed = (dict(params), params, x, y)
        fn, adapted, spec = self.backward, self.adapted, case.spec
        kw = {} if adapted is not None else keywords(fn, case)

        def body() -> Any:
            if adapted is not None:
                out = adapted.run(params, x, y, spec, case.lengths)
                return Lowered(materialize(out.grads), out.loss, out.source)
            return materialize(fn(params, x, y, **kw))

        return run_limited(body, self.timeout), passed

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
        raw, passed = self._once(case)
        out.stdout, out.seconds = raw.stdout, raw.seconds
        if raw.timed_out:
            out.error = finding("timeout", timeout_message(raw, float(self.timeout or 0), "first call"))
            return out
        mutated, said = mutations(case, passed)
        mutation = None
        if mutated:
            which = list(dict.fromkeys(mutated))
            mutation = finding("mutated_input", f"your backward changed {', '.join(which)} in place — "
                               + "; ".join(said) + " (work on copies: the caller's arrays must stay as they were)",
                               which)
        if raw.exc is not None:
            message = user_frames(raw.exc, PROTOCOL)
            hint = tie_hint(case) if _shape_error(raw.exc) else None
            out.error = finding("exception", message + (f"\n{hint}" if hint else ""))
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
            raw2, _ = self._once(case)
            out.seconds += raw2.seconds
            if raw2.timed_out:
                out.error = finding("timeout", timeout_message(raw2, float(self.timeout or 0),
                                                               "second call, same inputs"))
                return out
            if raw2.exc is not None:
                out.error = finding("nondeterministic", "the first call returned, a second call on the same inputs "
                                    "raised:\n" + user_frames(raw2.exc, PROTOCOL))
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


def invoke(backward: Backward, case: Case, *, timeout: float | None = DEFAULT_TIMEOUT,
           repeat: bool = False) -> CallOutcome:
    """Call a backward once (twice with ``repeat``) on ``case`` through a :class:`Target`."""
    target = Target(backward, timeout=timeout)
    return target.call(target.prepare(case), repeat=repeat)


def call_backward(backward: Backward, case: Case) -> Any:
    """Call a plain backward in the canonical protocol on copies of the case's arrays (no limit, no checks)."""
    params, x, y = _inputs(case)
    return backward(params, x, y, **keywords(backward, case))


__all__ = ["Target", "CallOutcome", "invoke", "call_backward", "wants_spec", "takes", "keywords",
           "signature_problem", "Backward", "PROTOCOL", "PROTOCOL_CALL"]
