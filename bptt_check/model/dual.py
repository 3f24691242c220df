"""Dual numbers: the one forward's derivatives along k directions at once, in real float64 (DESIGN §5).

A :class:`Dual` is a value a + ε·ȧ with ε² = 0: its primal a (no copy axis: computed once) and k
tangents ȧ (a leading copy axis, shape (k, *a.shape) up to broadcasting). The one forward
(``model.forward.objective``) run in the namespace :data:`DUAL` returns L and its k directional
derivatives vᵀ∇L — what the complex step Im L(θ + iεv)/ε computes with ε = 1e-30, exact to rounding
(forward mode) — in real arithmetic: the primal is not repeated per copy, and a product with a tangent is
a real (batched) product instead of a complex one.

Only what the built-in cells, the output layer and the losses use is defined. Anything else — an
operation this module lacks, a numpy function applied to a dual, an index with arrays — raises
:class:`NotDual` (a ``TypeError``, as numpy's own refusals are), and the caller takes the complex step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Array = np.ndarray


class NotDual(TypeError):
    """An operation the dual namespace does not define (the caller falls back to the complex step)."""


def _widen(t: Array, ndim: int) -> Array:
    """A tangent (k, *s) with axes of length 1 after the copy axis, so that it has 1 + ``ndim`` axes."""
    extra = ndim + 1 - t.ndim
    return t if extra <= 0 else t.reshape(t.shape[0], *(1,) * extra, *t.shape[1:])


def _parts(a: Any) -> tuple[Any, Array | None]:
    """(primal, tangent) of a dual; (a, None) of a constant."""
    return (a.p, a.t) if isinstance(a, Dual) else (a, None)


def _sum(a: Array | None, b: Array | None) -> Array | None:
    """The sum of two tangent terms (None: no term); ``a``, a fresh array, is reused when it can hold it."""
    if a is None or b is None:
        return a if b is None else b
    if a.shape == b.shape:
        a += b
        return a
    return a + b


def _dual(p: Any, t: Array | None) -> Dual | Any:
    """The value ``p`` with the tangents ``t`` (a constant when None)."""
    return p if t is None else _new(p, t)


def _new(p: Any, t: Array) -> Dual:
    """A dual of a primal and tangents that already have its axes (no checks: the operations' results)."""
    out = object.__new__(Dual)
    out.p, out.t = p, t
    return out


def _matmul(a: Any, b: Any) -> Array:
    """a @ b, a tangent (k, ..., m, n) times a primal (n, p) as one product of (k·…·m, n) rows."""
    if np.ndim(b) == 2 and a.flags.c_contiguous:
        return (a.reshape(-1, a.shape[-1]) @ b).reshape(*a.shape[:-1], b.shape[-1])
    return a @ b


_BASIC = (slice, type(None), type(Ellipsis))   # with integers: the indices a dual takes


class Dual:
    """A primal value and k tangents (``t``: (k, *p.shape), or broadcastable to it)."""

    __slots__ = ("p", "t")
    __array_ufunc__ = None    # numpy defers: array ∘ dual calls the dual's reflected operator

    def __init__(self, primal: Any, tangent: Array) -> None:
        self.p = np.asarray(primal)
        self.t = _widen(np.asarray(tangent), self.p.ndim)

    def __array__(self, *args: Any, **kwargs: Any) -> Array:
        raise NotDual("a dual number cannot become a numpy array")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.p.shape)

    @property
    def ndim(self) -> int:
        return int(self.p.ndim)

    def reshape(self, *shape: int) -> Dual:
        """The primal reshaped to ``shape``, the tangents to (k, *shape)."""
        t = np.broadcast_to(self.t, (len(self.t), *self.p.shape))
        return _new(self.p.reshape(shape), t.reshape(len(t), *shape))

    def __getitem__(self, index: Any) -> Dual:
        index = index if type(index) is tuple else (index,)
        if not all(type(i) in _BASIC or isinstance(i, (int, np.integer)) for i in index):
            raise NotDual(f"index {index!r}: a dual takes basic indices only")
        t = self.t if self.t.shape[1:] == self.p.shape else np.broadcast_to(self.t, (len(self.t), *self.p.shape))
        return _new(self.p[index], t[index if index and index[0] is Ellipsis else (slice(None), *index)])

    # ------------------------------------------------------------ arithmetic
    def __neg__(self) -> Dual:
        return _new(-self.p, -self.t)

    def __add__(self, other: Any) -> Any:
        (a, da), (b, db) = _parts(self), _parts(other)
        p = a + b
        da, db = _wide(p, da, db)
        return _dual(p, da if db is None else db if da is None else da + db)

    __radd__ = __add__

    def __sub__(self, other: Any) -> Any:
        return self + (-other)

    def __rsub__(self, other: Any) -> Any:
        return (-self) + other

    def __mul__(self, other: Any) -> Any:
        (a, da), (b, db) = _parts(self), _parts(other)
        p = a * b
        da, db = _wide(p, da, db)
        return _dual(p, _sum(None if da is None else da * b, None if db is None else a * db))

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Any:
        (a, da), (b, db) = _parts(self), _parts(other)
        p = a / b
        da, db = _wide(p, da, db)
        return _dual(p, _sum(None if da is None else da / b, None if db is None else (-p / b) * db))

    def __rtruediv__(self, other: Any) -> Any:
        p = other / self.p
        return Dual(p, -(p / self.p) * self.t)

    def __pow__(self, e: Any) -> Dual:
        if isinstance(e, Dual) or not np.isscalar(e):
            raise NotDual("a dual takes powers with a constant scalar exponent only")
        if e == 2:
            return _new(self.p * self.p, (2.0 * self.p) * self.t)
        return Dual(self.p ** e, (e * self.p ** (e - 1)) * self.t)

    def __matmul__(self, other: Any) -> Any:
        return _matmul_dual(self, other)

    def __rmatmul__(self, other: Any) -> Any:
        return _matmul_dual(other, self)


def _wide(p: Any, da: Array | None, db: Array | None) -> tuple[Array | None, Array | None]:
    """Two tangents widened to the axes of the result ``p`` (a constant's: None)."""
    n = p.ndim + 1
    return (da if da is None or da.ndim == n else _widen(da, n - 1),
            db if db is None or db.ndim == n else _widen(db, n - 1))


def _matmul_dual(a: Any, b: Any) -> Any:
    (pa, da), (pb, db) = _parts(a), _parts(b)
    if np.ndim(pa) < 2 or np.ndim(pb) < 2:
        raise NotDual("a dual matmul takes matrices (or stacks of them) only")
    p = pa @ pb
    da, db = _wide(p, da, db)
    return _dual(p, _sum(None if da is None else _matmul(da, pb), None if db is None else pa @ db))


def _unary(a: Any, f: Any, slope: Any) -> Any:
    """f(a), with the tangent ȧ·slope(a, f(a))."""
    if not isinstance(a, Dual):
        return f(a)
    p = f(a.p)
    return _new(p, a.t * slope(a.p, p))


def primal(a: Any) -> Any:
    """The value without its tangents."""
    return a.p if isinstance(a, Dual) else a


def tangents(a: Any, k: int, shape: tuple[int, ...] | None = None) -> Array:
    """The k tangents of ``a`` (zeros for a constant), broadcast to (k, *shape) (by default a's own shape)."""
    shape = np.shape(primal(a)) if shape is None else shape
    if not isinstance(a, Dual):
        return np.zeros((k, *shape))
    return np.broadcast_to(a.t, (k, *shape))


def _sech2(x: Array) -> Array:
    """tanh′(x) = 1/cosh²(x), accurate where tanh saturates (1 − tanh² would cancel: the complex step's
    tanh keeps its derivative's digits there, and so must the duals)."""
    return 1.0 / np.cosh(x) ** 2


class DualOps:
    """The namespace of the one forward on duals (see ``model/ops.py``)."""

    name = "dual"

    @staticmethod
    def tanh(z: Any) -> Any:
        return _unary(z, np.tanh, lambda x, _: _sech2(x))

    @staticmethod
    def exp(z: Any) -> Any:
        return _unary(z, np.exp, lambda _, y: y)

    @staticmethod
    def log(z: Any) -> Any:
        return _unary(z, np.log, lambda x, _: 1.0 / x)

    @staticmethod
    def sigmoid(z: Any) -> Any:
        return _unary(z, lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)), lambda x, _: 0.25 * _sech2(0.5 * x))

    @staticmethod
    def relu(z: Any) -> Any:
        return _unary(z, lambda x: np.where(x > 0, x, 0.0 * x), lambda x, _: (x > 0).astype(x.dtype))

    @staticmethod
    def mT(a: Any) -> Any:
        """The transpose of the last two axes."""
        if not isinstance(a, Dual):
            return np.swapaxes(a, -1, -2)
        return Dual(np.swapaxes(a.p, -1, -2), np.swapaxes(a.t, -1, -2))

    @staticmethod
    def sum(a: Any, axis: int, keepdims: bool = False) -> Any:
        if not isinstance(a, Dual):
            return a.sum(axis=axis, keepdims=keepdims)
        t = np.broadcast_to(a.t, (len(a.t), *a.shape))
        return Dual(a.p.sum(axis=axis, keepdims=keepdims),
                    t.sum(axis=axis if axis < 0 else axis + 1, keepdims=keepdims))

    @staticmethod
    def concat(parts: Sequence[Any]) -> Any:
        """Values side by side along the last axis (leading axes broadcast)."""
        k = next((len(p.t) for p in parts if isinstance(p, Dual)), None)
        lead = np.broadcast_shapes(*(np.shape(primal(p))[:-1] for p in parts))
        p = np.concatenate([np.broadcast_to(primal(q), (*lead, np.shape(primal(q))[-1])) for q in parts], axis=-1)
        if k is None:
            return p
        return Dual(p, np.concatenate([tangents(q, k, (*lead, np.shape(primal(q))[-1])) for q in parts], axis=-1))

    @staticmethod
    def stack(parts: Sequence[Any]) -> Any:
        """States (B, H) stacked to (n, B, H)."""
        p = np.stack([primal(q) for q in parts], axis=-3)
        k = next((len(q.t) for q in parts if isinstance(q, Dual)), None)
        return p if k is None else _new(p, np.stack([tangents(q, k) for q in parts], axis=-3))

    @staticmethod
    def shift(a: Any) -> Any:
        """The largest primal along the last axis (for a stable softmax), as a constant."""
        return np.max(primal(a), axis=-1, keepdims=True)

    @staticmethod
    def lift(a: Any, like: Any) -> Any:
        """Constants stay numpy arrays."""
        return a

    @staticmethod
    def positive_part(a: Any) -> Any:
        """max(a, 0) of the primal, as a constant (a stable shift)."""
        return np.maximum(primal(a), 0.0)

    @staticmethod
    def pick(a: Any, index: Any) -> Any:
        """``a[..., index]`` per row: the entry of each row's class."""
        p = primal(a)
        idx = np.broadcast_to(np.asarray(index, dtype=np.int64), p.shape[:-1])[..., None]
        out = np.take_along_axis(p, idx, axis=-1)[..., 0]
        if not isinstance(a, Dual):
            return out
        t = np.broadcast_to(a.t, (len(a.t), *a.shape))
        return Dual(out, np.take_along_axis(t, np.broadcast_to(idx, (*t.shape[:-1], 1)), axis=-1)[..., 0])

    @staticmethod
    def keep(a: Any) -> Any:
        return a

    keep_pre = keep


DUAL = DualOps()
