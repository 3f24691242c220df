"""Hand-written backward passes, each readable against its seed document.

Every function has the canonical signature ``backward(params, x, y, spec)``
(DESIGN §4) and returns dL/dθ for every parameter present, h0 and x. All but the two seed-literal
ones also take ``lengths`` (a padded batch, DESIGN §12) and work without an output layer.

| name           | seed                              | modes                     |
| -------------- | --------------------------------- | ------------------------- |
| many_to_one    | 000, eqs 7.6-7.9 + dense layer    | many-to-one, full BPTT    |
| many_to_many   | 002, eq 7.15                      | many-to-many, full BPTT   |
| jacobian       | 001, eqs 3-4, z <- z ds_t/ds_t-1  | every mode and schedule   |
| truncated      | DESIGN §3 windows                 | every mode and schedule   |
| lstm           | torch's nn.LSTM, DESIGN §11       | every mode and schedule   |
| gru            | torch's nn.GRU and its variants   | every mode and schedule   |

The first four are vanilla-cell backwards (``cell="rnn"``); ``lstm`` and ``gru`` are those cells'.
"""

from __future__ import annotations

from collections.abc import Callable

from ..model.spec import Spec
from .gru import backward as gru
from .jacobian import backward as jacobian
from .lstm import backward as lstm
from .many_to_many import backward as many_to_many
from .many_to_one import backward as many_to_one
from .truncated import backward as truncated

BUILTINS: dict[str, Callable] = {
    "many_to_one": many_to_one,
    "many_to_many": many_to_many,
    "jacobian": jacobian,
    "truncated": truncated,
    "lstm": lstm,
    "gru": gru,
}


def supports(name: str, spec: Spec) -> bool:
    """Whether the built-in ``name`` implements ``spec``."""
    cell = spec.cell.partition(":")[0]
    if name in ("lstm", "gru"):
        return cell == name
    if cell != "rnn":
        return False
    if name in ("many_to_one", "many_to_many") and (spec.lengths or not spec.output_layer):
        return False                               # the seeds' equations: full batches through V
    if name == "many_to_one":
        return spec.mode == "many-to-one" and spec.truncation.kind == "none"
    if name == "many_to_many":
        return spec.mode == "many-to-many" and spec.truncation.kind == "none"
    return name in BUILTINS


__all__ = ["BUILTINS", "supports", "many_to_one", "many_to_many", "jacobian", "truncated", "lstm", "gru"]
