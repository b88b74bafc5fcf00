"""``kvmdune bench load``'s verdicts: start-up subtracted, ratios to the slow path,
and a fast way slower than the slow path flagged (the measuring itself is the
bench's: ``kvmdune bench load --quick``)."""

from __future__ import annotations

from kvmdune.bench.load import FAST, FAST_UNPATCHED, NATIVE, SLOW, Row, format_table


def _row(fast: float, unpatched: float, slow: float) -> Row:
    startup = {FAST.name: 1.0, FAST_UNPATCHED.name: 1.0, SLOW.name: 1.0}
    wall = {NATIVE.name: 0.1, FAST.name: fast + 1.0, FAST_UNPATCHED.name: unpatched + 1.0,
            SLOW.name: slow + 1.0}
    return Row("find", 4, True, wall, startup)


def test_start_up_is_subtracted_before_the_ratio():
    row = _row(fast=1.0, unpatched=2.0, slow=4.0)
    assert row.net(FAST.name) == 1.0
    assert row.ratio(FAST.name) == 0.25 and row.ratio(FAST_UNPATCHED.name) == 0.5
    assert not row.slower(FAST.name)


def test_a_fast_way_slower_than_slow_is_flagged():
    rows = [_row(fast=1.0, unpatched=5.0, slow=4.0), _row(fast=1.0, unpatched=2.0, slow=4.0)]
    table = format_table(rows, samples=3)
    assert "SLOWER: fast --no-patch" in table
    assert "fast slower than slow in 1 of 2 configurations" in table


def test_a_failed_way_is_shown_not_compared():
    row = _row(fast=1.0, unpatched=2.0, slow=4.0)
    del row.wall[SLOW.name]
    row.errors[SLOW.name] = "output differs from native"
    assert row.ratio(FAST.name) is None and not row.slower(FAST.name)
    assert "output differs" in format_table([row], samples=1)
