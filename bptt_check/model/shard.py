"""A share of a sweep's cases: shard K of N runs the case indices i with i mod N = K - 1.

Every case is drawn from (spec, seed, index) alone (``cases.draw_case``), so a shard checks exactly the
cases a single run would check at those indices, bit for bit; the N shards together check every index
once. Round robin rather than blocks: each shard gets as many cases of every spec as the others (within
one), so shards take about as long as each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError

_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
MAX_SHARDS = 1_000_000


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or isinstance(self.count, bool) or not (
                isinstance(self.index, int) and isinstance(self.count, int)):
            raise UsageError(f"a shard is two whole numbers K/N, got {self.index!r}/{self.count!r}")
        if not 1 <= self.count <= MAX_SHARDS:
            raise UsageError(f"shard {self.index}/{self.count}: N must be between 1 and {MAX_SHARDS:,}")
        if not 1 <= self.index <= self.count:
            raise UsageError(f"shard {self.index}/{self.count}: K must be between 1 and N = {self.count} "
                             f"(shards are numbered 1 … N, e.g. --shard 1/{self.count} … --shard "
                             f"{self.count}/{self.count})")

    @classmethod
    def parse(cls, text: str | Shard | tuple[int, int]) -> Shard:
        """``"2/4"`` (or a Shard, or ``(2, 4)``) -> ``Shard(2, 4)``; UsageError for anything else."""
        if isinstance(text, Shard):
            return text
        if isinstance(text, tuple) and len(text) == 2:
            return cls(*text)
        m = _FORM.fullmatch(str(text))
        if not m:
            raise UsageError(f"expected a shard as K/N (shard K of N, 1 <= K <= N), e.g. 2/4; got {text!r}")
        return cls(int(m[1]), int(m[2]))

    def indices(self, cases: int) -> range:
        """The case indices of this shard among ``range(cases)``."""
        return range(self.index - 1, cases, self.count)

    def holds(self, index: int) -> bool:
        return index % self.count == self.index - 1

    def to_dict(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard(1, 1)
