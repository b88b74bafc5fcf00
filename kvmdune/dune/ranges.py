"""A set of address ranges (sorted, disjoint, merged): which pages of the program
the Dune API unmapped while Linux still maps them."""

from __future__ import annotations

import bisect


class RangeSet:
    """Disjoint half-open ranges [start, end), kept sorted and merged."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __contains__(self, address: int) -> bool:
        index = bisect.bisect_right(self._starts, address) - 1
        return index >= 0 and address < self._ends[index]

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        self.remove(start, end)
        index = bisect.bisect_left(self._starts, start)
        if index > 0 and self._ends[index - 1] == start:       # join the one before
            index -= 1
            start = self._starts[index]
            del self._starts[index], self._ends[index]
        if index < len(self._starts) and self._starts[index] == end:   # and the one after
            end = self._ends[index]
            del self._starts[index], self._ends[index]
        self._starts.insert(index, start)
        self._ends.insert(index, end)

    def remove(self, start: int, end: int) -> None:
        if start >= end or not self._starts:
            return
        first = max(bisect.bisect_right(self._starts, start) - 1, 0)
        last = bisect.bisect_left(self._starts, end)
        kept_starts, kept_ends = [], []
        for s, e in zip(self._starts[first:last], self._ends[first:last]):
            if e <= start or s >= end:        # untouched
                kept_starts.append(s)
                kept_ends.append(e)
                continue
            if s < start:
                kept_starts.append(s)
                kept_ends.append(start)
            if e > end:
                kept_starts.append(end)
                kept_ends.append(e)
        self._starts[first:last] = kept_starts
        self._ends[first:last] = kept_ends

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends))
