"""``kvmdune bench dune`` still runs (a smoke test with tiny sizes; no timing is
asserted): every row has kvmdune's, the floor's and Linux's figure. Where
dune-traps' library and `kvmdune run` wiring are missing, the guest is built with
the API's C side and the tests' stand-in dune.h and runs under tests/dune's harness."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import kvmdune
from kvmdune.bench import dune

pytestmark = pytest.mark.kvm
SOURCE = Path(dune.__file__).parent / "native" / "dune_vm.c"
PACKAGE = Path(kvmdune.__file__).parent
INCLUDE, VM_SOURCE = PACKAGE / "dune" / "include", PACKAGE / "dune" / "native" / "vm.c"
TESTS = Path(__file__).parent.parent / "dune"
PROGRAMS, STANDIN = TESTS / "vm_programs", TESTS / "standin"


def build(out: Path) -> str:
    binary = out / "dune_vm"
    subprocess.run(["gcc", "-O2", "-static", "-I", str(INCLUDE), "-I", str(PROGRAMS),
                    "-I", str(STANDIN), "-o", str(binary), str(SOURCE), str(VM_SOURCE)],
                   check=True)
    return str(binary)


def real_library() -> bool:
    """Whether dune-traps' library and `kvmdune run` wiring are here."""
    try:
        from kvmdune.dune import library, process   # noqa: F401
        library.libs()
    except Exception:
        return False
    return True


def test_bench_dune_quick_reports_every_row():
    if real_library():
        rows = dune.run_dune_bench(samples=1, quick=True)
    else:
        rows = dune.run_dune_bench(samples=1, quick=True, build=build,
                                   runner=dune.vmm_runner("tests.dune.harness:bench_factory"))
    assert len(rows) == 6
    assert all(row.kvmdune_us > 0 and row.floor_us > 0 and row.linux_us > 0 for row in rows)
    assert "kvmdune_vm_clear_bits" in dune.format_table(rows)
