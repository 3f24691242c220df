"""relu kinks: which gradient elements the finite-difference step makes non-differentiable.

relu is not differentiable at 0. Central finite differences move one element
θ_k by ±h_k; if some pre-activation ĥ that the objective depends on crosses 0
inside that interval, the difference quotient mixes the two one-sided slopes
and proves nothing about θ_k. We instrument the pre-activations: every element
is moved by ±``KINK_REACH``·h_k (h_k the FD oracle's own step, so a slightly
larger step than the oracle's is covered too) through the same windowed
objective the oracles differentiate (each window started from its fixed
entering state), all copies of a tensor batched in one forward, and an element
is *at a kink* when a pre-activation changes sign, or is exactly 0, anywhere in
that reach.

``near_kinks`` is the float32 counterpart: pre-activations within float32
rounding of 0, where a correct float32 backward may legitimately take either
side of the kink.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _model
from ._spec import Window

if TYPE_CHECKING:
    from ._cases import Case

Array = np.ndarray

KINK_REACH = 2.0   # multiples of the FD step
BLOCK = 256        # perturbed copies per batched forward (bounds the memory)
NEAR_KINK_ULPS = 256.0   # float32 rounding reach of a pre-activation, in units of u·(Σ|terms|)·(t+1)
_U32 = float(np.finfo(np.float32).eps) / 2


def fd_step(values: Array) -> Array:
    """The finite-difference oracle's step for every element: h = ε·max(1, |θ|)."""
    try:
        from .oracles.fd import EPS as eps
    except ImportError:  # pragma: no cover - the oracle package reorganised
        eps = float(np.cbrt(np.finfo(np.float64).eps))
    return float(eps) * np.maximum(1.0, np.abs(values))


def _preactivation_signs(params: dict[str, Array], x: Array, spec, windows: list[Window],
                         entering: Array) -> list[Array]:
    """Signs of every pre-activation the windowed objective evaluates, per window and step.

    Any array may carry a leading axis of P perturbed copies (W: (P, H, I), x: (P, T, B, I), ...);
    the result then has shape (P, B, H) per step.
    """
    W, U, b = params["W"], params["U"], params.get("b")
    out = []
    for w in windows:
        hprev = params["h0"] if w.start == 0 else entering[w.start]
        for t in range(w.start, max(w.losses) + 1):
            xt = x[..., t, :, :]
            z = np.matmul(xt, np.swapaxes(W, -1, -2)) + np.matmul(hprev, np.swapaxes(U, -1, -2))
            if b is not None:
                z = z + (b[..., None, :] if b.ndim == 2 else b)
            out.append(np.sign(z))
            hprev = _model.act(spec.activation, z)
    return out


def kink_elements(case: Case, reach: float = KINK_REACH) -> dict[str, Array]:
    """For every gradient (parameters and x): True where ±reach·h straddles a relu kink."""
    spec = case.spec
    params = {n: np.asarray(v, dtype=np.float64) for n, v in case.params.items()}
    x = np.asarray(case.x, dtype=np.float64)
    out = {n: np.zeros(v.shape, dtype=bool) for n, v in params.items()}
    out["x"] = np.zeros(x.shape, dtype=bool)
    if spec.activation != "relu":
        return out
    T = x.shape[0]
    windows = spec.windows(T)
    if not windows:
        return out
    entering = _model.forward(params, x, spec).h
    base = _preactivation_signs(params, x, spec, windows, entering)
    targets = {**params, "x": x}
    for name, arr in targets.items():
        P = arr.size
        if name in ("V", "c"):
            continue                         # the output layer never moves a pre-activation
        step = reach * fd_step(arr).reshape(-1)
        mask = np.zeros(P, dtype=bool)
        for lo in range(0, P, BLOCK):
            idx = np.arange(lo, min(P, lo + BLOCK))
            for sign in (1.0, -1.0):
                copies = np.broadcast_to(arr, (idx.size, *arr.shape)).copy()
                flat = copies.reshape(idx.size, P)
                flat[np.arange(idx.size), idx] += sign * step[idx]
                moved = dict(params)
                if name != "x":
                    moved[name] = copies
                signs = _preactivation_signs(moved, copies if name == "x" else x, spec, windows, entering)
                for s0, s1 in zip(base, signs):
                    s1 = np.broadcast_to(s1, (idx.size, *s0.shape))   # untouched by this tensor: no copy axis
                    mask[idx] |= (s1 != s0).reshape(idx.size, -1).any(axis=1)
        out[name] = mask.reshape(arr.shape)
    return out


def near_kinks(case: Case, ulps: float = NEAR_KINK_ULPS) -> list[tuple[int, int, int]]:
    """(t, b, j) of the pre-activations within float32 rounding of 0 (float32 may take either side)."""
    if case.spec.activation != "relu":
        return []
    params = {n: np.asarray(v, dtype=np.float64) for n, v in case.params.items()}
    x = np.asarray(case.x, dtype=np.float64)
    tr = _model.forward(params, x, case.spec)
    W, U, b = params["W"], params["U"], params.get("b")
    found = []
    for t in range(x.shape[0]):
        mag = np.abs(x[t]) @ np.abs(W).T + np.abs(tr.h[t]) @ np.abs(U).T
        if b is not None:
            mag = mag + np.abs(b)
        reach = ulps * _U32 * mag * (t + 1)
        for bb, j in np.argwhere(np.abs(tr.hhat[t]) <= reach):
            found.append((t, int(bb), int(j)))
    return found
