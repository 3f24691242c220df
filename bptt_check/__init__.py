"""bptt-check: verify hand-written backpropagation through time.

The public surface is three functions and the types they use:

- :func:`check` — check a backward on many random cases drawn inside a spec (a :class:`Report`);
- :func:`check_case` — check it on one :class:`Case` (see :func:`draw_case`; a :class:`CaseResult`);
- :func:`assert_backward` — like ``check``, raising :class:`CheckFailed` on a wrong case.

Code in other conventions is plugged in with :func:`adapt` (or :func:`adapt_torch`,
:func:`adapt_module`) and a :class:`Layout`. Errors: :class:`BPTTCheckError` is the base,
:class:`UsageError` a bad spec, layout, option or target, :class:`CheckFailed` a wrong case.
``bptt_check.builtin`` (hand-written backwards), ``bptt_check.strategies`` (Hypothesis strategies)
and ``bptt_check.plugin.check_backward`` are public too; every other module is internal.

The package, layer by layer (each imports only the layers below it):
``cli.py``/``plugin.py`` → ``api.py``/``session.py`` → ``report/`` → ``verdict/`` (the staged
verdict) → ``runner/`` (the only code that calls yours) and ``oracles/`` → ``model/`` → ``errors.py``.
"""

from __future__ import annotations

from .api import Report, assert_backward, check, check_case
from .errors import BPTTCheckError, CheckFailed, UsageError
from .model.cases import Case, draw_case
from .model.compare import GradResult
from .model.spec import Sizes, Spec, Truncation
from .runner.adapters import Layout, adapt, adapt_module, adapt_torch
from .verdict.result import CaseResult
from .version import __version__

__all__ = [
    "__version__",
    "check",
    "check_case",
    "assert_backward",
    "draw_case",
    "Case",
    "CaseResult",
    "GradResult",
    "Report",
    "Spec",
    "Sizes",
    "Truncation",
    "Layout",
    "adapt",
    "adapt_torch",
    "adapt_module",
    "BPTTCheckError",
    "UsageError",
    "CheckFailed",
]
