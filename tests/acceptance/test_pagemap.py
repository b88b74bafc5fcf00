"""/proc/self/pagemap, clear_refs, smaps and status from the guest's own page tables:
C programs compiled here, run natively and under ``kvmdune run``.

This host's kernel has no soft-dirty bits (CONFIG_MEM_SOFT_DIRTY is off: clear_refs 4
is accepted and pagemap's bit 55 stays 0), so natively a program sees none of its
writes; under kvmdune bit 55 comes from the guest's PTE dirty bits and shows exactly
the pages written since clear_refs 4, with Linux's rule that new mappings are
soft-dirty. Everything else the programs print must match the native run.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from .conftest import run_dune, run_native, vmm_env

pytestmark = pytest.mark.kvm
SOURCES = pathlib.Path(__file__).parent / "programs" / "pagebits"
PAGES = 16


@pytest.fixture(scope="module")
def pagebits(tmp_path_factory) -> str:
    target = tmp_path_factory.mktemp("pagebits") / "pagebits"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(target), str(SOURCES / "pagebits.c")],
                   check=True)
    return str(target)


def lines(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return dict(line.split(" ", 1) for line in result.stdout.decode().splitlines())


def pages(*indexes: int, count: int = PAGES) -> str:
    return "".join("1" if i in indexes else "0" for i in range(count))


def test_soft_dirty_shows_the_pages_written_since_clear_refs_4(pagebits):
    """(a) and (d): the same program natively and under kvmdune. Natively this host
    shows bit 55 = 0 everywhere, writes included; under kvmdune exactly the pages
    written since clear_refs 4 (a read is not a write), read again and again from
    one descriptor; a new mapping is soft-dirty until the next clear_refs 4."""
    native = lines(run_native([pagebits, "softdirty"]))
    dune = lines(run_dune([pagebits, "softdirty"]))
    assert native["wrote-2-5-11"] == pages() and native["new-mapping"] == "0000"
    assert set(native.values()) <= {pages(), "0000", "0"}     # no soft-dirty at all
    assert dune == {
        "written": pages(*range(PAGES)),     # the mapping is new: all soft-dirty
        "cleared": pages(),
        "wrote-2-5-11": pages(2, 5, 11),
        "again": pages(2, 5, 11),            # reading does not clear
        "new-mapping": "1111",
        "old-mapping": pages(2, 5, 11),
        "new-cleared": "0000",
        "pread-5": "0",                      # pread at an offset, answered live
        "pread-5-written": "1",
    }


def test_present_file_and_exclusive_bits_match_linux(pagebits):
    """(c): bit 63 for untouched, read and written anonymous pages (a page only read
    is Linux's zero page: present, not exclusive), bits 61 and 56, and Linux's
    errors (a read not a multiple of 8, a clear_refs value out of 1-5, a number
    beyond an int, a read of clear_refs) are the same as natively; no frame numbers."""
    native, dune = run_native([pagebits, "present"]), run_dune([pagebits, "present"])
    assert lines(dune) == lines(native)
    assert lines(dune)["present"] == pages(1, 2, 4, count=8)
    assert b"pfn-zero 1" in dune.stderr


def test_a_huge_reservation_is_answered_as_linux_does(pagebits):
    """A 64 GiB MAP_NORESERVE mapping with one page written: one present page in a
    16 MiB read of its entries, 4 kB of Rss (pages are read a chunk at a time, and
    holes cost one walk each)."""
    native = run_native([pagebits, "reservation"])
    assert lines(run_dune([pagebits, "reservation"])) == lines(native) == {
        "middle": "010", "rss": "4", "wide-read": "16777216 present 1"}


def test_referenced_counts_the_pages_read_since_clear_refs_1(pagebits):
    """(b): after clear_refs 1, smaps' Referenced counts the pages read since.
    (Natively this host shows 0 kB after the reads: its kernel's cleared accessed
    bits are not set again, most likely because the host itself runs on software
    virtualised paging (PLATFORM.md); so no comparison with the native run.)"""
    dune = lines(run_dune([pagebits, "referenced"]))
    assert dune["written"] == "rss=128 referenced=128 anonymous=128"
    assert dune["cleared"] == "referenced=0"
    assert dune["read-5"] == "referenced=20 rss=128"


def test_clear_refs_5_resets_the_peak_rss(pagebits):
    """VmHWM keeps the peak of a 16 MiB mapping after it is unmapped, and clear_refs 5
    brings it down to the current RSS (as natively)."""
    for run in (run_native, run_dune):
        tokens = ("rss-with " + lines(run([pagebits, "peak"]))["rss-with"]).split()
        values = dict(zip(tokens[0::2], (int(value) for value in tokens[1::2])))
        with_big, after, hwm, reset, now = (values[name] for name in (
            "rss-with", "rss-after", "hwm", "hwm-reset", "rss-now"))
        assert with_big >= 16 * 1024 > after
        assert hwm >= with_big - 256          # the peak outlived the mapping
        assert reset == now < 16 * 1024


#: A VMM like ``kvmdune run`` whose own tool reads and clears the program's dirty
#: bits through a BitReader whenever the program makes the marker call (1000).
_READER_VMM = """
import json, sys
from kvmdune.linux.process import Process
from kvmdune.linux.runner import run_command
from kvmdune.memory import PAGE_SIZE, PTE
MARKER = 1000
seen = []
real = Process.on_syscall
def on_syscall(self, cpu, event):
    if event.number != MARKER:
        return real(self, cpu, event)
    base, size = event.args[0], event.args[1]
    found = self.space.page_bits.reader("tool").read(base, size, PTE.DIRTY, clear=True)
    seen.append([(page - base) // PAGE_SIZE for page in found])
    return real(self, cpu, event)       # ENOSYS, as natively
Process.on_syscall = on_syscall
status = run_command(sys.argv[2:])
with open(sys.argv[1], "w") as report:
    json.dump({"status": status, "seen": seen}, report)
"""


def test_pagemap_and_a_python_reader_keep_their_own_bits(pagebits, tmp_path):
    """(e): clear_refs 4 (the pagemap reader) and a BitReader in the VMM, clearing in
    turn over the same pages, each see every write since their own last clear."""
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-c", _READER_VMM, str(report), pagebits,
                             "readers"], capture_output=True, timeout=120,
                            env=vmm_env(dict(os.environ)))
    printed = lines(result)
    seen = json.loads(report.read_text())
    assert seen["status"] == 0
    assert seen["seen"] == [list(range(PAGES)), [1, 2], [3], [4]]
    assert printed["after-both"] == pages()          # pagemap's clear came after 3
    assert printed["wrote-4"] == pages(4)            # the tool's clear did not take 4


def test_a_sparse_filling_shows_only_the_pages_touched(pagebits):
    """One write per 256 KiB in address order, and one read, over 4 MiB of a mapping
    paged in on first touch: a fault that continues a filling maps the rest of its
    2 MiB region, yet pagemap (present, exclusive), mincore and smaps show exactly
    the pages touched, the read one as Linux's zero page, as natively."""
    native, dune = lines(run_native([pagebits, "sparse"])), lines(run_dune([pagebits, "sparse"]))
    touched = [str(page) for page in range(0, 1024, 64)]
    assert dune == native
    assert dune["exclusive"] == " ".join(touched)
    assert dune["present"] == dune["mincore"] == " ".join(sorted(touched + ["200"], key=int))
    assert dune["smaps"] == "rss=64 anonymous=64 private-dirty=64"


#: A VMM like ``kvmdune run`` that counts the guest's page faults it serves.
_FAULT_COUNTING_VMM = """
import json, sys
from kvmdune.linux.mm import MemoryMap
from kvmdune.linux.runner import run_command
faults = []
real = MemoryMap.handle_fault
def handle_fault(self, address, error):
    faults.append(address)
    return real(self, address, error)
MemoryMap.handle_fault = handle_fault
status = run_command(sys.argv[2:])
with open(sys.argv[1], "w") as report:
    json.dump({"status": status, "faults": faults}, report)
"""


FILLED = 64 << 20
HUGE_PAGE = 2 << 20


def test_a_sequential_fill_takes_one_fault_per_2_mib(pagebits, tmp_path):
    """Writing 64 MiB of a big mapping in order (4 KiB pages) reaches the VMM at most
    once per 2 MiB region (and twice more where the mapping's start is not aligned),
    not once per 256 KiB block (256), and smaps shows all of it written."""
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-c", _FAULT_COUNTING_VMM, str(report), pagebits,
                             "fill"], capture_output=True, timeout=120,
                            env=vmm_env(dict(os.environ)))
    printed = lines(result)
    assert printed["smaps"] == "rss=65536 anonymous=65536"
    start = int(printed["at"], 16)
    counted = json.loads(report.read_text())
    assert counted["status"] == 0
    in_fill = [address for address in counted["faults"] if start <= address < start + FILLED]
    assert len(in_fill) <= FILLED // HUGE_PAGE + 2


GC_PROGRAM = r"""
#include <gc.h>
#include <stdio.h>
struct node { struct node *next; long value; char pad[48]; };
int main(void) {
    GC_INIT();
    GC_enable_incremental();
    struct node *keep = NULL;
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < 20000; i++) {
            struct node *n = GC_MALLOC(sizeof *n);
            n->value = i;
            if (i % 100 == 0) { n->next = keep; keep = n; }
        }
        GC_collect_a_little();
    }
    GC_gcollect();
    long sum = 0;
    for (struct node *n = keep; n; n = n->next) sum += n->value;
    printf("incremental %d sum %ld\n", GC_is_incremental_mode(), sum);
    return sum == 40L * (199 * 200 / 2) * 100 ? 0 : 1;
}
"""


@pytest.fixture(scope="module")
def gc_program(tmp_path_factory) -> str:
    if not pathlib.Path("/usr/include/gc.h").exists() or shutil.which("gcc") is None:
        pytest.skip("libgc-dev is not installed (scripts/setup installs it)")
    directory = tmp_path_factory.mktemp("libgc")
    (directory / "gc.c").write_text(GC_PROGRAM)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(directory / "gc"),
                    str(directory / "gc.c"), "-lgc"], check=True)
    return str(directory / "gc")


def test_libgc_incremental_mode_uses_soft_dirty_under_kvmdune(gc_program):
    """(f): Debian's libgc probes soft-dirty bits at GC_enable_incremental (a write,
    then pagemap's bit 55): natively it finds none and falls back to mprotect; under
    kvmdune it uses them, and collects correctly either way. One marker thread
    (GC_MARKERS=1): kvmdune does not run threads yet (libgc starts none here)."""
    env = {**os.environ, "GC_PRINT_VERBOSE_STATS": "1", "GC_MARKERS": "1"}
    native, dune = run_native([gc_program], env=env), run_dune([gc_program], env=env)
    assert native.returncode == 0 and dune.returncode == 0, dune.stderr[-3000:]
    assert dune.stdout == native.stdout == b"incremental 1 sum 79600000\n"
    assert b"Soft-dirty bit is not supported by kernel" in native.stderr
    assert b"Using soft-dirty bit feature" not in native.stderr
    assert b"Using soft-dirty bit feature" in dune.stderr
