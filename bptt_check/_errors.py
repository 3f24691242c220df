"""The one exception type of bptt-check."""

from __future__ import annotations

from typing import Any


class BPTTCheckError(Exception):
    """Raised for bad specs, bad inputs and failed assertions.

    At the public API boundary the message is extended with the inputs the
    caller gave (spec, seed, case index), so a traceback alone says how to
    reproduce the problem.
    """

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
        """Return a copy of this error with more context attached."""
        merged = {**context, **self.context}
        return BPTTCheckError(self.message, **merged)
