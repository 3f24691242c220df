"""relu kinks: which gradient elements the finite-difference step makes non-differentiable.

relu is not differentiable at 0. Central finite differences move one element
θ_k by ±h_k; if some pre-activation ĥ that the objective depends on crosses 0
inside that interval, the difference quotient mixes the two one-sided slopes
and proves nothing about θ_k. We instrument the pre-activations: every element
is moved by ±``KINK_REACH``·h_k (h_k the FD oracle's own step, :func:`fd_step`, so a
slightly larger step than the oracle's is covered too) through the same windowed
run the oracles differentiate (``forward.run_windows``: each window started from its
fixed entering state), all copies of a tensor batched in one run, and an element
is *at a kink* when a pre-activation changes sign, or is exactly 0, anywhere in
that reach.

``near_kinks`` is the float32 counterpart: pre-activations within float32
rounding of 0, where a correct float32 backward may legitimately take either
side of the kink.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .cell import cell_of
from .forward import forward, run_windows
from .names import OUTPUT_LAYER
from .spec import Spec, Window
from .tolerance import U32

if TYPE_CHECKING:
    from .cases import Case

Array = np.ndarray

EPS_FD = 1e-9      # the finite-difference oracle's relative step (oracles/fd.py takes it from here)
KINK_REACH = 2.0   # multiples of the FD step
BLOCK = 256        # perturbed copies per batched run (bounds the memory)
NEAR_KINK_ULPS = 256.0   # float32 rounding reach of a pre-activation, in units of u·(Σ|terms|)·(t+1)


def fd_step(values: Array, eps: float = EPS_FD) -> Array:
    """The finite-difference oracle's step for every element: h = ε·max(1, |θ|)."""
    return float(eps) * np.maximum(1.0, np.abs(values))


def _signs(params: dict[str, Array], x: Array, spec: Spec, windows: list[Window], entering: Any) -> list[Array]:
    """Signs of every pre-activation the windowed run evaluates, in order (a leading axis of P
    perturbed copies carries through: (P, B, H) per step)."""
    cell = cell_of(spec)
    out: list[Array] = []

    def visit(w: Window, t: int, state: tuple[Any, ...], cache: Any) -> None:
        out.extend(np.sign(z) for z in cell.pre_activations(cache))

    run_windows(params, x, spec, windows, entering, visit, cell=cell)
    return out


def kink_elements(case: Case, reach: float = KINK_REACH) -> dict[str, Array]:
    """For every gradient (parameters and x): True where ±reach·h straddles a relu kink."""
    spec = case.spec
    params = {n: np.asarray(v, dtype=np.float64) for n, v in case.params.items()}
    x = np.asarray(case.x, dtype=np.float64)
    out = {n: np.zeros(v.shape, dtype=bool) for n, v in params.items()}
    out["x"] = np.zeros(x.shape, dtype=bool)
    windows = case.windows
    if not windows or not cell_of(spec).pre_activations(np.zeros(1)):
        return out                           # no kink anywhere: a smooth cell
    entering = forward(params, x, spec).entering
    base = _signs(params, x, spec, windows, entering)
    for name, arr in {**params, "x": x}.items():
        if name in OUTPUT_LAYER:
            continue                         # the output layer never moves a pre-activation
        P = arr.size
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
                signs = _signs(moved, copies if name == "x" else x, spec, windows, entering)
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
    tr = forward(params, x, case.spec)
    W, U, b = params["W"], params["U"], params.get("b")
    found = []
    for t in range(x.shape[0]):
        mag = np.abs(x[t]) @ np.abs(W).T + np.abs(tr.h[t]) @ np.abs(U).T
        if b is not None:
            mag = mag + np.abs(b)
        reach = ulps * U32 * mag * (t + 1)
        for bb, j in np.argwhere(np.abs(tr.hhat[t]) <= reach):
            found.append((t, int(bb), int(j)))
    return found
