"""The exceptions of bptt-check: one base, and subclasses a caller can tell apart.

- :class:`BPTTCheckError` — the base; ``except BPTTCheckError`` catches everything bptt-check raises.
- :class:`UsageError` — bad usage: a spec, a layout, an option or a TARGET that cannot be used.
  Nothing was checked.
- :class:`CheckFailed` — the check ran and some case is wrong (a gradient differs from the
  reference, or the backward misbehaved): what :func:`bptt_check.assert_backward` and the pytest
  plugin raise. ``.report`` holds the run when there is one.

At the public API boundary the message is extended with the inputs the caller gave (spec, seed,
case index), so a traceback alone says how to reproduce the problem.
"""

from __future__ import annotations

from typing import Any


class BPTTCheckError(Exception):
    """Base of every error bptt-check raises."""

    def __init__(self, message: str, **context: Any) -> None:
        self.message = message
        self.context: dict[str, Any] = dict(context)
        super().__init__(self._render())

    def _render(self) -> str:
        if not self.context:
            return self.message
        extra = ", ".join(f"{k}={v}" for k, v in self.context.items())
        return f"{self.message}\n  with inputs: {extra}"

    def with_context(self, **context: Any) -> BPTTCheckError:
        """A copy of this error (same class) with more context attached."""
        merged = {**context, **self.context}
        copy = type(self).__new__(type(self))
        BPTTCheckError.__init__(copy, self.message, **merged)
        copy.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("message", "context")})
        return copy


class UsageError(BPTTCheckError):
    """Bad usage: a spec, layout, option or TARGET that cannot be used (nothing was checked)."""


class CheckFailed(BPTTCheckError):
    """Some checked case is wrong: a gradient differs from the reference, or the backward misbehaved."""

    report: Any = None


__all__ = ["BPTTCheckError", "UsageError", "CheckFailed"]
