"""torch autograd in float64 through the one forward; truncation by holding each window's entering state fixed.

The objective is ``model.forward.objective`` run in the torch namespace: the same cell step, output
layer and losses as every other part of bptt-check, differentiated by torch. The states entering the
windows are constants (computed with the same parameters). The reference is computed whatever the
caller's grad mode (``torch.no_grad()``, ``inference_mode()`` or ``set_grad_enabled(False)`` around
the check do not turn it off).

Where the spec allows (the built-in rnn cell with tanh or relu, any schedule of windows), the same
objective runs on torch's fused RNN kernel instead (``fused.py``): same numbers to machine precision,
several times faster. ``device="cuda"`` runs either on a GPU.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError
from ..model.forward import forward, objective
from ..model.ops import torch_ops
from . import fused as fused_module
from .base import OracleResult

if TYPE_CHECKING:
    from ..model.cases import Case

DEVICES = re.compile(r"cpu|cuda(:\d+)?")


def device_problem(device: str | None) -> str | None:
    """What keeps the reference from running on the torch ``device`` (None: nothing): a name other than
    cpu, cuda, cuda:N, or a GPU torch does not see (torch is imported only for a GPU)."""
    if device is None or device == "cpu":
        return None
    if not isinstance(device, str) or not DEVICES.fullmatch(device):
        return f"device must be cpu, cuda or cuda:N, got {device!r}"
    import torch

    if not torch.cuda.is_available():
        return (f"device {device!r}: torch.cuda.is_available() is False (torch {torch.__version__}, "
                f"{'built without CUDA' if torch.version.cuda is None else 'no GPU visible'}); "
                "check without a device (the CPU) or on a machine with a GPU")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        return f"device {device!r}: torch sees {torch.cuda.device_count()} GPU(s) (cuda:0 … )"
    return None


class AutogradOracle:
    """``fused``: None (default) uses torch's fused kernel where the spec allows it, True/False force the
    choice; ``device``: the torch device the reference is computed on (None: the CPU)."""

    name = "autograd"

    def __init__(self, *, device: str | None = None, fused: bool | None = None) -> None:
        self.device = device
        self.fused = fused

    def gradients(self, case: Case) -> OracleResult:
        import torch

        spec = case.spec
        T = case.x.shape[0]
        allowed = fused_module.supported(spec) and getattr(case, "lengths", None) is None
        if self.fused and not allowed:
            raise UsageError(f"torch's fused RNN kernel does not compute this spec ({spec}): it takes the "
                             f"built-in rnn cell with {' or '.join(fused_module.FUSED_ACTIVATIONS)}, or the lstm or "
                             "gru cell in torch's conventions, on full-length sequences with an output layer; use "
                             "fused=None")
        if allowed and self.fused is not False:
            out, loss = fused_module.fused_gradients(case, self.device)
            return self._result(out, loss, T)
        dev = torch.device(self.device or "cpu")
        params = {k: np.asarray(v, dtype=np.float64) for k, v in case.params.items()}
        x64 = np.asarray(case.x, dtype=np.float64)
        states = forward(params, x64, spec).states       # the states entering the windows: constants
        ops = torch_ops()
        with torch.inference_mode(False), torch.enable_grad():
            leaves = {k: torch.tensor(v, requires_grad=True, device=dev) for k, v in params.items()}
            x = torch.tensor(x64, requires_grad=True, device=dev)
            if spec.loss == "cross_entropy":
                y = torch.tensor(np.asarray(case.y), dtype=torch.long, device=dev)
            else:
                y = torch.tensor(np.asarray(case.y, dtype=np.float64), device=dev)

            def entering(s: int) -> tuple[torch.Tensor, ...]:
                return tuple(torch.from_numpy(part[s]).to(dev) for part in states)

            weights = None if case.lengths is None else case.weights
            total = objective(leaves, x, y, spec, case.windows, entering, ops=ops, weights=weights)
            inputs = [*leaves.values(), x]
            if isinstance(total, torch.Tensor) and total.requires_grad:
                grads = torch.autograd.grad(total, inputs, allow_unused=True)
            else:  # no loss step falls in any window
                grads = (None,) * len(inputs)
        names = [*leaves.keys(), "x"]
        out = {}
        for name, inp, gr in zip(names, inputs, grads):
            out[name] = np.zeros(tuple(inp.shape)) if gr is None else gr.detach().cpu().numpy().copy()
        loss = float(total.detach()) if isinstance(total, torch.Tensor) else float(total)
        return self._result(out, loss, T)

    def _result(self, out: dict[str, np.ndarray], loss: float, T: int) -> OracleResult:
        eps = np.finfo(np.float64).eps
        # machine precision, growing with the number of steps a gradient crosses
        err = {k: 8 * eps * T * float(np.max(np.abs(v), initial=0.0)) for k, v in out.items()}
        return OracleResult(self.name, out, err, loss)
