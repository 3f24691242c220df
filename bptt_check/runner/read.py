"""Reading what a backward returned: the protocol check, turning every fault into a finding.

A finding is ``{"kind", "message", "keys"}`` (kinds in :data:`ERROR_KINDS`): what is wrong, where, how
much, and the likely mix-up behind it (a transposed weight, batch-major arrays, a gradient per time
step…). Plain data in, plain data out: nothing here calls the user's code (``target.py`` does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..model.tolerance import allowed, floor_of, scale_of, tolerance_for

if TYPE_CHECKING:
    from ..model.cases import Case

ERROR_KINDS = ("exception", "timeout", "crashed", "missing_key", "extra_key", "shape", "type", "dtype",
               "non_finite", "mutated_input", "nondeterministic")
# when a result has several faults, the error's kind is the first of these present
_RESULT_ORDER = ("type", "missing_key", "extra_key", "shape", "dtype", "non_finite")


# ----------------------------------------------------------------- text from the user's code is data

MAX_MESSAGE = 8000               # characters of a finding's message kept (a 20 MB exception message is cut)
MAX_KEY = 200                    # characters of a key name kept
MAX_KEYS = 64                    # keys named in one finding
# terminal escape sequences (CSI ``ESC [ … final``, OSC ``ESC ] … BEL/ST``, two-byte ``ESC x``, 8-bit CSI), and
# C0/C1 controls but tab and newline, line separators, and the bidirectional overrides that reorder what a
# reader sees: the one definition, used here at the source and by the renderers (``verdict.result.plain``)
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -~]?|\x9b[0-?]*[ -/]*[@-~]")
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(text: Any, limit: int = MAX_MESSAGE) -> str:
    """Text that came from the user's code, made safe to store and show: at most ``limit`` characters
    (the head and the tail kept), terminal escape sequences removed, other control characters, bidi
    overrides and lone surrogates written as visible escapes (``\\x07``, ``\\ud800``); tabs and
    newlines kept."""
    if type(text) is not str:
        text = str.__str__(text) if isinstance(text, str) else str(text)
    if len(text) > limit:                      # the head and the tail, the marker included: cleaning again keeps it
        marker = f"\n[... {len(text)} characters, {{}} not kept ...]\n"
        room = max(limit - len(marker) - 12, 2)
        head = room * 2 // 3
        tail = room - head
        text = text[:head] + marker.format(len(text) - head - tail) + text[len(text) - tail:]
    if text.isascii() and text.isprintable():
        return text
    text = ESCAPES.sub("", text.replace("\r\n", "\n"))
    text = CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}",
                        text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Key:
    """A returned key that is not a string, known only by its (safe) repr: the harness never hashes,
    compares or prints the user's object itself."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def plain_key(key: Any) -> str | Key:
    """A returned key as the harness handles it: an exact ``str`` copy, or a :class:`Key`."""
    if isinstance(key, str):
        return clean(str.__str__(key), MAX_KEY)
    try:
        text = repr(key)
        if not isinstance(text, str):
            raise TypeError("__repr__ returned a non-string")
    except Exception as exc:
        try:
            name = type(key).__name__
        except Exception:
            name = "object"
        text = f"<a {clean(name, 60)} whose repr() raised {type(exc).__name__}>"
    return Key(clean(text, MAX_KEY))


def finding(kind: str, message: str, keys: list[str] | tuple[str, ...] = (), cause: str | None = None
            ) -> dict[str, Any]:
    """An error finding; ``cause``: the diagnosis code a layout hint names (``transposed``, …). Its
    message and keys are user data: bounded and cleaned (:func:`clean`)."""
    assert kind in ERROR_KINDS, kind
    out = {"kind": kind, "message": clean(message), "keys": [clean(k, MAX_KEY) for k in list(keys)[:MAX_KEYS]]}
    if cause:
        out["cause"] = cause
    return out


HINT = "hint:"        # a line of a finding's message that says what to try


def tie_hint(case: Case) -> str | None:
    """On a case with I ≠ O, the likeliest reason for a shape error in code written for one vocabulary."""
    if case.I == case.O or {"I", "O"} <= set(case.spec.tie):
        return None
    return (f"{HINT} this case has I = {case.I} ≠ O = {case.O}: does your code assume I = O? tie them: "
            "tie=('I', 'O') (--tie I,O), one vocabulary in and out")


def headline(error: dict[str, Any]) -> str:
    """One line for an error finding: an exception's last line, else the message's first line."""
    lines = [ln.strip() for ln in str(error.get("message", "")).splitlines() if ln.strip()]
    hints = [ln for ln in lines if ln.startswith(HINT)]
    lines = [ln for ln in lines if not ln.startswith(HINT)]
    if not lines:
        return str(error.get("kind", ""))
    if error.get("kind") == "exception":
        return lines[-1] + "".join(f" — {h[len(HINT):].strip()}" for h in hints)
    if len(lines) > 1 and lines[0].endswith("raised:"):
        return lines[0] + " " + lines[-1]
    return lines[0]

# ----------------------------------------------------------------- reading the result

@dataclass
class _Value:
    """One returned value, turned into a numpy array (or why not) inside the call's time limit."""

    array: np.ndarray | None
    origin: str                           # what the user returned: "ndarray", "torch.Tensor", "list", ...
    dtype: str = ""                       # a torch tensor's dtype as torch names it (numpy: see .array)
    problem: tuple[str, str] | None = None   # (kind, message)
    matrix: bool = False


@dataclass
class _Result:
    mapping: bool
    type_name: str
    items: list[tuple[Any, _Value]] = field(default_factory=list)
    length: int | None = None
    first_is_mapping: bool = False
    error: str = ""                       # reading the mapping itself raised


def materialize(out: Any) -> _Result:
    """Turn the backward's result into plain data (runs in the call's thread, under its limit; keys
    become exact strings or :class:`Key`)."""
    name = clean(type(out).__name__, MAX_KEY)
    if not isinstance(out, Mapping):
        res = _Result(False, name)
        if isinstance(out, (list, tuple)):
            res.length = len(out)
            res.first_is_mapping = bool(out) and isinstance(out[0], Mapping)
        return res
    res = _Result(True, name)
    try:
        for key, value in list(out.items()):
            res.items.append((plain_key(key), _convert(value)))
    except Exception as exc:                        # a mapping whose items() fails
        res.error = clean(f"{type(exc).__name__}: {_text_of(exc)}")
    return res


def _text_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<its str() raised>"


def _is_torch(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _convert(value: Any) -> _Value:
    origin = clean(str(type(value).__module__).split(".")[0] + "." + str(type(value).__name__), MAX_KEY)
    origin = origin.removeprefix("builtins.").removeprefix("numpy.")
    if value is None:
        return _Value(None, "None", problem=("type", "is None, not an array"))
    try:
        if _is_torch(value):
            t = value.detach()
            if getattr(t, "is_sparse", False) or str(getattr(t, "layout", "torch.strided")) != "torch.strided":
                t = t.to_dense()
            dtype = str(t.dtype).removeprefix("torch.")
            if dtype == "bfloat16":
                t = t.float()
            t = t.cpu()
            if hasattr(t, "resolve_conj"):
                t = t.resolve_conj().resolve_neg()
            return _Value(np.array(t.numpy(), copy=True), "torch.Tensor", dtype)
        if isinstance(value, np.matrix):
            return _Value(np.array(np.asarray(value), copy=True), "numpy.matrix", matrix=True)
        if isinstance(value, np.ndarray):
            return _Value(np.array(value, copy=True), "ndarray")
        arr = np.array(value)
    except Exception as exc:
        return _Value(None, origin, problem=("type", f"is a {origin} that cannot be read as an array "
                                                     f"({type(exc).__name__}: {clean(_text_of(exc), 500)})"))
    return _Value(arr, origin)


def to_numpy(value: Any) -> np.ndarray:
    """A numpy copy of an array-like the user's code gave (numpy, torch on any device, lists)."""
    v = _convert(value)
    if v.array is None:
        raise TypeError(f"a value {v.problem[1] if v.problem else 'cannot be read as an array'}")
    return v.array


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _layout_hint(key: str, got: tuple[int, ...], want: tuple[int, ...], case: Case) -> tuple[str, str | None]:
    """The likely layout mix-up behind a wrong shape, and the diagnosis code it names (if any)."""
    hint = _hint_text(key, got, want, case)
    if hint.startswith("transposed?"):
        return hint, "transposed"
    if hint.startswith("one gradient per sequence?"):
        return hint, "batch_not_summed"
    return hint, None


def _hint_text(key: str, got: tuple[int, ...], want: tuple[int, ...], case: Case) -> str:
    T, B = case.T, case.B
    size = int(np.prod(got)) if got else 1
    if len(got) == 2 and len(want) == 2 and got == want[::-1]:
        return "transposed? (weights are (out, in): W is (H, I), V is (O, H))"
    if key == "h0" and len(got) == 1 and got == want[1:]:
        return "summed over the batch? h0 has one row per sequence, (B, H)"
    squeezed = tuple(s for s in got if s != 1) == tuple(s for s in want if s != 1)
    if squeezed and len(got) == len(want) + 1 and got[0] == 1:
        return "an extra axis of length 1 (keepdims?)"
    if key == "x" and len(got) == 3 and got == (want[1], want[0], want[2]):
        return "batch-major? x is time-major (T, B, I)"
    if len(got) == len(want) + 1 and got[1:] == want and got[0] == T:
        return f"one gradient per time step? sum the {T} steps"
    if len(got) == len(want) + 1 and got[1:] == want and got[0] == B:
        return f"one gradient per sequence? sum over the batch of {B}"
    if squeezed:
        return "an extra or missing axis of length 1 (keepdims?)"
    if got == ():
        return "a scalar where an array is expected"
    if size == int(np.prod(want)):
        return "same number of elements, different layout (reshaped?)"
    swapped = {case.I: case.O, case.O: case.I}
    if case.I != case.O and len(got) == len(want) and tuple(swapped.get(s, s) for s in want) == got:
        return (f"sized with O = {case.O} where I = {case.I} belongs, or the other way round: does your code assume "
                "I = O? tie them: tie=('I', 'O') (--tie I,O)")
    return ""


def _check_value(key: str, v: _Value, want: tuple[int, ...], case: Case
                 ) -> tuple[Any, list[tuple[str, str]], str | None]:
    """The array for ``key``, the findings on it, and the cause a layout hint names."""
    out: list[tuple[str, str]] = []
    if v.problem is not None:
        return None, [(v.problem[0], f"{key!r} {v.problem[1]}")], None
    arr = v.array
    assert arr is not None
    kind = arr.dtype.kind
    if kind in "OUSVMm":
        what = {"O": f"a {v.origin} holding Python objects", "U": "an array of strings",
                "S": "an array of bytes"}.get(kind, f"an array of {arr.dtype}")
        return None, [("type", f"{key!r} is {what}, not an array of numbers")], None
    if kind == "f" and arr.dtype.itemsize >= 4 and not v.dtype:
        dtype = ""                                  # numpy float32/64: fine (and naming a dtype is slow)
    else:
        dtype = v.dtype or arr.dtype.name
    if kind == "b" or dtype == "bool":
        out.append(("dtype", f"{key!r} has dtype bool: gradients are floating point"))
    elif kind in "iu":
        out.append(("dtype", f"{key!r} has integer dtype {dtype}: gradients are floating point "
                             "(an integer zeros_like buffer, or integer division?)"))
    elif kind == "c":
        out.append(("dtype", f"{key!r} has complex dtype {dtype}: gradients of this model are real"))
    elif dtype in ("float16", "bfloat16"):
        out.append(("dtype", f"{key!r} has dtype {dtype}: too coarse to check (about 3 significant "
                             "digits); compute in float32 or float64"))
    got = tuple(int(s) for s in arr.shape)
    if v.matrix and got != want and arr.size == int(np.prod(want)) and len(want) == 1 and 1 in got:
        arr = arr.reshape(want)                     # np.matrix is always 2-D: a (1, n) row for an (n,) vector
        got = want
    if got != want:
        hint, cause = _layout_hint(key, got, want, case)
        out.append(("shape", f"{key!r}: expected shape {_fmt(want)}, got {_fmt(got)}" + (f" — {hint}" if hint else "")))
        return None, out, cause
    if out:
        return None, out, None
    finite = np.isfinite(arr)
    if not finite.all():
        out.append(("non_finite", _non_finite(key, arr, finite, case)))
        return None, out, None
    return arr, out, None


def _non_finite(key: str, arr: np.ndarray, finite: np.ndarray, case: Case) -> str:
    nan = int(np.isnan(arr).sum())
    inf = int((~finite).sum()) - nan
    parts = [f"{n} {w}" for n, w in ((nan, "nan"), (inf, "inf")) if n]
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    msg = f"{key!r} has {' and '.join(parts)} of {arr.size} elements, first at {first}"
    if key == "x" and arr.ndim == 3:
        steps = sorted({int(t) for t in np.argwhere(~finite)[:, 0]})
        shown = ", ".join(map(str, steps[:8])) + (", ..." if len(steps) > 8 else "")
        msg += f", at time step{'s' if len(steps) > 1 else ''} {shown}"
    if nan == arr.size:
        msg += " (all nan: a 0/0, log(0) or an uninitialized buffer?)"
    return msg


def read_result(res: _Result, case: Case, expected: Mapping[str, tuple[int, ...]],
                optional: Iterable[str] = ("x",)
                ) -> tuple[dict[str, np.ndarray] | None, dict[str, Any] | None, list[str]]:
    """Check a result against the protocol (``expected``: name -> shape; the ``optional`` ones, ``x``
    by default, may be left out): the gradients, or the error finding, and notes."""
    optional = set(optional)
    notes: list[str] = []
    if not res.mapping:
        msg = f"the backward returned {res.type_name}, expected a mapping {{'W': dW, 'U': dU, ...}}"
        if res.type_name == "NoneType":
            msg = ("the backward returned None (no return statement? a backward that updates weights "
                   "in place needs an adapter), expected a mapping {'W': dW, 'U': dU, ...}")
        elif res.first_is_mapping:
            msg += f"; it returned a {res.type_name} whose first item is a mapping: return only the gradients"
        elif res.length is not None:
            names = ", ".join(case.params)
            msg += (f"; it returned a {res.type_name} of {res.length} items: name them, e.g. "
                    f"dict(zip([{names}], grads)) if that is their order")
        return None, finding("type", msg), notes
    if res.error:
        return None, finding("type", f"reading the returned {res.type_name} failed: {res.error}"), notes

    expected = {k: tuple(int(s) for s in v) for k, v in expected.items()}
    got: dict[str, _Value] = {}
    found: list[tuple[str, str, str]] = []                 # (kind, key, message)
    extra: list[str] = []
    for key, value in res.items:
        if isinstance(key, str) and key in expected:
            got[key] = value
        else:
            extra.append(key if isinstance(key, str) else repr(key))
    missing = [k for k in expected if k not in optional and k not in got]
    renamed = [k for k in (*missing, "x") if "d" + k in extra and k not in got]
    if renamed:   # dW for W: one finding, not two
        pairs = ", ".join(f"{'d' + k!r} for {k!r}" for k in renamed)
        found.append(("missing_key", renamed[0], f"missing {', '.join(map(repr, renamed))}: you returned {pairs} — "
                                                 "name gradients after the parameter, without the 'd'"))
        found += [("missing_key", k, "") for k in renamed[1:]]
        extra = [e for e in extra if e[1:] not in renamed or not e.startswith("d")]
    for name in extra:
        hint = _extra_hint(name, case)
        found.append(("extra_key", name, f"unexpected key {name!r}" + (f" — {hint}" if hint else "")))
    for key in missing:
        if key not in renamed:
            found.append(("missing_key", key, f"missing gradient {key!r} (shape {_fmt(expected[key])})"))
    grads: dict[str, np.ndarray] = {}
    causes: list[str] = []
    for key, value in got.items():
        arr, problems, cause = _check_value(key, value, expected[key], case)
        found += [(k, key, m) for k, m in problems]
        if cause:
            causes.append(cause)
        if arr is not None:
            grads[key] = arr
    low = sorted(k for k, a in grads.items() if a.dtype.itemsize < 8 and case.spec.dtype == "float64")
    if low:
        notes.append(f"{', '.join(low)} returned in float32 under a float64 spec (use --dtype float32 if your "
                     "backward computes in float32)")
    if not found:
        return grads, None, notes
    kinds = [k for k in _RESULT_ORDER if any(f[0] == k for f in found)]
    ordered = sorted(found, key=lambda f: _RESULT_ORDER.index(f[0]))
    keys = list(dict.fromkeys(f[1] for f in ordered))
    message = "; ".join(f[2] for f in ordered if f[2])
    cause = next((c for c in ("transposed", "batch_not_summed") if c in causes), None) if kinds[0] == "shape" else None
    return grads or None, finding(kinds[0], message, keys, cause), notes


def _extra_hint(name: str, case: Case) -> str:
    if name.startswith("d") and name[1:] in case.params or name == "dx":
        return f"name gradients after the parameter: {name[1:]!r}, not {name!r}"
    if name in ("b", "c") and not case.spec.bias:
        return "the spec has no biases (--no-bias)"
    for known in (*case.params, "x"):
        if name.lower() == known.lower():
            return f"keys are case-sensitive: {known!r}"
    names = ", ".join(case.params)
    if name.lower() in ("loss", "h", "hs", "y", "yhat", "cache", "state", "dh", "dy"):
        return f"return only gradients ({names}, optionally x)"
    return f"not a parameter of this model ({names}, optionally x)"


# ----------------------------------------------------------------- mutation, repetition

def mutations(case: Case, passed: tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]
               ) -> tuple[list[str], list[str]]:
    """What the backward changed among its inputs: (keys, descriptions)."""
    given, params, x, y = passed
    keys: list[str] = []
    said: list[str] = []
    for key, orig in case.params.items():
        if key not in params:
            keys.append(key)
            said.append(f"removed params[{key!r}]")
        elif params[key] is not given[key]:
            keys.append(key)
            said.append(f"replaced params[{key!r}] by another object (the caller's dict is changed)")
        else:
            d = _changed(given[key], orig, parameter=True)
            if d:
                keys.append(key)
                said.append(f"{key}: {d}")
    for key in params:
        if key not in case.params:
            keys.append(key)
            said.append(f"added params[{key!r}]")
    for key, now, orig in (("x", x, case.x), ("y", y, case.y)):
        d = _changed(now, np.asarray(orig))
        if d:
            keys.append(key)
            said.append(f"{key}: {d}")
    return keys, said


def _changed(now: np.ndarray, orig: np.ndarray, parameter: bool = False) -> str:
    if now.shape != orig.shape:
        return f"resized from {_fmt(orig.shape)} to {_fmt(now.shape)}"
    if now.dtype != orig.dtype:
        return f"dtype changed from {orig.dtype} to {now.dtype}"
    if now.tobytes() == orig.tobytes():
        return ""
    a, b = now.astype(np.float64), orig.astype(np.float64)
    diff = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    n = int(diff.sum())
    with np.errstate(invalid="ignore", over="ignore"):
        delta = np.where(diff, np.abs(a - b), 0.0)
    at = np.unravel_index(int(np.argmax(np.where(np.isnan(delta), np.inf, delta))), a.shape)
    where = tuple(int(i) for i in at)
    msg = f"{n} of {a.size} elements changed, largest change {float(delta[at]):.3g} at {where}"
    if not a.any():
        msg += " (now all zeros: used as a gradient buffer?)"
    elif n == a.size and parameter:
        msg += " (every element: a parameter update inside the backward?)"
    return msg


def compare_repeat(first: dict[str, np.ndarray], second: dict[str, np.ndarray], case: Case
                    ) -> tuple[dict[str, Any] | None, list[str]]:
    """Is the second call's result the first's? An error finding beyond tolerance, a note below it.

    Each gradient is compared at the precision it was computed in (issue 12): float32 arrays at the
    float32 tolerance over the case's T steps (run-to-run noise of a few ulp, as GPU atomics give,
    is not a finding), float64 ones at float64's.
    """
    if set(first) != set(second):
        return finding("nondeterministic", "a second call on the same inputs returned other keys: "
                       f"{sorted(first)} then {sorted(second)}", sorted(set(first) ^ set(second))), []
    # an all-zero gradient is judged at a fraction of the case's largest one (as in any comparison)
    floor = floor_of(first.values())
    bad: list[str] = []
    keys: list[str] = []
    ratios: list[float] = []
    small: list[tuple[float, str]] = []
    for key, a in first.items():
        b = second[key]
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if a.shape == b.shape and a64.tobytes() == b64.tobytes():
            continue
        if a.shape != b.shape:
            keys.append(key)
            bad.append(f"{key}: shape {_fmt(a.shape)} then {_fmt(b.shape)}")
            continue
        low = a.dtype.kind == "f" and a.dtype.itemsize < 8 or b.dtype.kind == "f" and b.dtype.itemsize < 8
        tol = tolerance_for("float32" if low else "float64", case.T)
        diff = np.abs(b64 - a64)
        # differences below the smallest normal number of the dtype (denormals) are zero for this purpose
        tiny = float(np.finfo(a.dtype).tiny) if a.dtype.kind == "f" else 0.0
        off = ~(diff <= allowed(a64, tol, scale_of(a64, floor), tiny))
        if not off.any():
            small.append((float(diff.max()), key))
            continue
        at = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
        keys.append(key)
        bad.append(f"{key}: {int(off.sum())} of {a.size} elements differ, up to {float(diff.max()):.3g} at {at}")
        den = float(np.vdot(a64, a64))
        if den > 0:
            ratios.append(float(np.vdot(a64, b64)) / den)
    if not bad:
        worst = max(small, default=(0.0, ""))
        notes = [f"not bit-for-bit reproducible: a second call on the same inputs differs in "
                 f"{', '.join(k for _, k in small)}, by at most {worst[0]:.2g} (in {worst[1]}; within the "
                 "tolerance of the precision it was computed in)"] if small else []
        return None, notes
    same = bool(ratios) and len(ratios) == len(keys) and max(ratios) - min(ratios) < 1e-6 * max(1.0, abs(ratios[0]))
    if same and abs(ratios[0] - 1.0) > 1e-3:
        why = (f"{ratios[0]:.4g}× the first (gradients accumulated in buffers kept between calls, "
               "not zeroed?)")
    else:
        why = "different gradients (random numbers, global state or a cache in the backward?)"
    shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    return finding("nondeterministic", f"a second call on the same inputs returned {why} — {shown}", keys), []
