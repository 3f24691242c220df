"""bptt-check: verify hand-written backpropagation through time.

The public surface is three functions and the types they use:

- :func:`check` — check a backward on many random cases drawn inside a spec;
- :func:`check_case` — check it on one :class:`Case` (see :func:`draw_case`);
- :func:`assert_backward` — like ``check``, raising :class:`BPTTCheckError` on a wrong gradient.

Code in other conventions is plugged in with :func:`adapt` (or :func:`adapt_torch`,
:func:`adapt_module`) and a :class:`Layout`; see ``bptt_check.adapters``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._cases import Case, draw_case
from ._check import CaseResult, Report, assert_backward, check, check_case
from ._errors import BPTTCheckError
from ._spec import Sizes, Spec, Truncation
from .adapters import Layout, adapt, adapt_module, adapt_torch

__all__ = [
    "__version__",
    "check",
    "check_case",
    "assert_backward",
    "draw_case",
    "Case",
    "CaseResult",
    "Report",
    "Spec",
    "Sizes",
    "Truncation",
    "BPTTCheckError",
    "Layout",
    "adapt",
    "adapt_torch",
    "adapt_module",
]
