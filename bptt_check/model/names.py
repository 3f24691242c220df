"""The gradient names, in the one order every loop, table and report uses.

The order follows the model: the cell's parameters (input W, recurrent U, biases b and bu), the
output layer (V, c), the initial states (h0, c0), then dL/dx. Names a layout or a cell adds (a second
hidden bias under your own name, say) come after these, in the order they were met.
"""

from __future__ import annotations

from collections.abc import Iterable

ORDER: tuple[str, ...] = ("W", "U", "b", "bu", "V", "c", "h0", "c0", "x")
OUTPUT_LAYER: tuple[str, ...] = ("V", "c")
INITIAL_STATES: tuple[str, ...] = ("h0", "c0")


def ordered(names: Iterable[str]) -> list[str]:
    """``names`` in the canonical order (unknown names after the known ones, as met)."""
    names = list(dict.fromkeys(names))
    known = [k for k in ORDER if k in names]
    return known + [k for k in names if k not in ORDER]


def describe(names: Iterable[str]) -> str:
    """``dW, dU`` for a list of gradient names, in order."""
    return ", ".join(f"d{n}" for n in ordered(names))
