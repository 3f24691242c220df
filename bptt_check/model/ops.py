"""The array namespaces the one forward runs in.

The cell's step, the output layer and the losses are written once, against a tiny namespace of
operations; the namespace decides what the numbers are:

- :data:`NUMPY` — numpy arrays, real (the reference forward, the mistake variants, the kinks) or
  complex128 (the literal complex step), with an optional leading axis of perturbed copies;
- :func:`rounded` — numpy, storing states and pre-activations rounded to float32 (a model of an
  implementation that keeps them in float32 arrays);
- :func:`torch_ops` — torch tensors (the autograd oracle); torch is imported only then;
- ``dual.DUAL`` (``model/dual.py``) — dual numbers: a value and k tangents, the built-in cells' witness.

Only what differs between numpy and torch is here; ``@``, ``+``, ``*`` and indexing work on both.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NumpyOps:
    """numpy, real or complex (the arrays say which)."""

    name = "numpy"
    tanh = staticmethod(np.tanh)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)

    @staticmethod
    def sigmoid(z: Any) -> Any:
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    @staticmethod
    def relu(z: Any) -> Any:
        return np.where(np.real(z) > 0, z, 0.0 * z)

    @staticmethod
    def mT(a: Any) -> Any:
        """The transpose of the last two axes (a leading axis of copies stays)."""
        return np.swapaxes(a, -1, -2)

    @staticmethod
    def sum(a: Any, axis: int, keepdims: bool = False) -> Any:
        return a.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def concat(parts: Any) -> Any:
        """Arrays side by side along the last axis (leading axes broadcast)."""
        lead = np.broadcast_shapes(*(np.shape(p)[:-1] for p in parts))
        return np.concatenate([np.broadcast_to(p, (*lead, np.shape(p)[-1])) for p in parts], axis=-1)

    @staticmethod
    def stack(parts: Any) -> Any:
        """States (..., B, H) stacked to (..., n, B, H) (leading axes broadcast)."""
        lead = np.broadcast_shapes(*(np.shape(p)[:-2] for p in parts))
        return np.stack([np.broadcast_to(p, (*lead, *np.shape(p)[-2:])) for p in parts], axis=-3)

    @staticmethod
    def shift(a: Any) -> Any:
        """The largest real part along the last axis (for a stable softmax), as a constant."""
        return np.real(a).max(axis=-1, keepdims=True)

    @staticmethod
    def lift(a: Any, like: Any) -> Any:
        """A numpy array of constants, in the namespace of ``like``."""
        return a

    @staticmethod
    def positive_part(a: Any) -> Any:
        """max(Re a, 0) element-wise, as a constant (a stable shift)."""
        return np.maximum(np.real(a), 0.0)

    @staticmethod
    def pick(a: Any, index: Any) -> Any:
        """``a[..., index]`` per row: the entry of each row's class."""
        idx = np.broadcast_to(np.asarray(index, dtype=np.int64), a.shape[:-1])
        return np.take_along_axis(a, idx[..., None], axis=-1)[..., 0]

    @staticmethod
    def keep(a: Any) -> Any:
        """A state as the implementation stores it (here: as computed)."""
        return a

    keep_pre = keep


class RoundedOps(NumpyOps):
    """numpy, with states (and, when asked, pre-activations) stored rounded to float32."""

    name = "numpy-float32-states"

    def __init__(self, pre: bool) -> None:
        self.pre = pre

    @staticmethod
    def keep(a: Any) -> Any:
        return np.asarray(a, dtype=np.float32).astype(np.float64)

    def keep_pre(self, a: Any) -> Any:
        return self.keep(a) if self.pre else a


NUMPY = NumpyOps()


def rounded(pre: bool = False) -> RoundedOps:
    """numpy with float32 states (``pre``: pre-activations too)."""
    return RoundedOps(pre)


class TorchOps:
    """torch tensors (autograd flows through every operation)."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.tanh = torch.tanh
        self.exp = torch.exp
        self.log = torch.log

    def sigmoid(self, z: Any) -> Any:
        return self.torch.sigmoid(z)

    def relu(self, z: Any) -> Any:
        return self.torch.relu(z)

    @staticmethod
    def mT(a: Any) -> Any:
        return a.transpose(-1, -2)

    @staticmethod
    def sum(a: Any, axis: int, keepdims: bool = False) -> Any:
        return a.sum(dim=axis, keepdim=keepdims)

    def concat(self, parts: Any) -> Any:
        lead = self.torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
        return self.torch.cat([p.expand(*lead, p.shape[-1]) for p in parts], dim=-1)

    def stack(self, parts: Any) -> Any:
        lead = self.torch.broadcast_shapes(*(p.shape[:-2] for p in parts))
        return self.torch.stack([p.expand(*lead, *p.shape[-2:]) for p in parts], dim=-3)

    @staticmethod
    def shift(a: Any) -> Any:
        return a.detach().real.amax(dim=-1, keepdim=True)

    def positive_part(self, a: Any) -> Any:
        return self.torch.clamp(a.detach().real, min=0.0)

    def lift(self, a: Any, like: Any) -> Any:
        return self.torch.as_tensor(a, dtype=like.real.dtype, device=like.device)

    def pick(self, a: Any, index: Any) -> Any:
        idx = self.torch.as_tensor(index, dtype=self.torch.long, device=a.device)
        idx = idx.expand(a.shape[:-1])
        return a.gather(-1, idx.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def keep(a: Any) -> Any:
        return a

    keep_pre = keep


_TORCH: TorchOps | None = None


def torch_ops() -> TorchOps:
    """The torch namespace (imports torch on first use)."""
    global _TORCH
    if _TORCH is None:
        _TORCH = TorchOps()
    return _TORCH
