"""``kvmdune syscalls``: every call with how it is served, and which ones the native
fast path may serve."""

from __future__ import annotations

import json
import subprocess
import sys


def _syscalls(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmdune", "syscalls", *options],
                          capture_output=True, text=True, timeout=60, check=True)


def test_every_call_is_listed_with_how_it_is_served():
    rows = json.loads(_syscalls("--json").stdout)
    by_name = {row["name"]: row for row in rows}
    # The descriptor table's own calls are emulated, on the table the native server
    # uses too: served natively (issue 13).
    assert by_name["close"]["support"] == "emulated" and by_name["close"]["fast"]
    assert by_name["mmap"]["support"] == "emulated" and not by_name["mmap"]["fast"]
    assert by_name["read"]["support"] == "forwarded" and by_name["read"]["fast"]
    assert by_name["getppid"]["fast"] and by_name["newfstatat"]["fast"]
    # Besides forwarded calls, only the emulations the native server answers the
    # same way (futex: private wakes, waits on a changed word) are fast.
    from kvmdune.linux.fastpath import NATIVE_EMULATIONS

    assert by_name["futex"]["support"] == "emulated" and by_name["futex"]["fast"]
    assert not any(row["fast"] for row in rows
                   if row["support"] != "forwarded" and row["name"] not in NATIVE_EMULATIONS)


def test_only_fast_lists_the_natively_served_calls():
    out = _syscalls("--only", "fast").stdout.splitlines()
    names = [line.split()[1] for line in out[:-1]]
    assert "write" in names and "mmap" not in names and "execve" not in names
    assert out[-1].endswith(f"{len(names)} served natively when they can be")
