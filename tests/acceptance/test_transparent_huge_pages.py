"""Transparent huge pages by Linux's rules (kvmdune/linux/thp.py): a C program maps
anonymous memory, advises (or not) a 2 MiB-aligned block, touches one byte and reads
its pagemap entries, smaps counters and RSS, natively and under ``kvmdune run``.

What Linux shows for a THP-eligible block depends on whether a free 2 MiB page was
found at that moment (else it falls back to 4 KiB pages): where the native run got
one, the two runs must print the same; where it did not, the kvmdune run is checked
against the rules alone. The other cases (no advice in this host's mode, opt-outs)
are deterministic and compared as they are.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from kvmdune.linux.thp import HOST_POLICY, HUGE_PAGES_VARIABLE, HugeAdvice, ThpMode

from .conftest import run_dune, run_native

pytestmark = pytest.mark.kvm
SOURCE = pathlib.Path(__file__).parent / "programs" / "thp" / "thp.c"
PAGES_PER_HUGE = 512
HUGE_KB = 2048


@pytest.fixture(scope="module")
def thp(tmp_path_factory) -> str:
    target = tmp_path_factory.mktemp("thp") / "thp"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(target), str(SOURCE)], check=True)
    return str(target)


def lines(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return dict(line.split(" ", 1) for line in result.stdout.decode().splitlines())


def huge_view(read_only: bool = False) -> dict[str, str]:
    """What Linux shows of a block that got a 2 MiB page by one touch (a read maps
    the huge zero page: present, with bit 61, in no counter)."""
    rss = "0" if read_only else str(HUGE_KB)
    return {"present": str(PAGES_PER_HUGE), "exclusive": "0" if read_only else str(PAGES_PER_HUGE),
            "file": str(PAGES_PER_HUGE) if read_only else "0", "first-present": "0",
            "Rss": rss, "Anonymous": rss, "AnonHugePages": rss, "Referenced": rss,
            "Private_Dirty": rss, "THPeligible": "1",
            "RssAnon-grew-MiB": "0" if read_only else "2"}


SMALL_VIEW = {"present": "1", "exclusive": "1", "file": "0", "first-present": "5", "Rss": "4",
              "Anonymous": "4", "AnonHugePages": "0", "Referenced": "4", "Private_Dirty": "4",
              "THPeligible": "0", "RssAnon-grew-MiB": "0"}


def expected_huge(case: str, disabled: int) -> bool:
    """Whether Linux's rules give the case's block a 2 MiB page (thp.c advises
    MADV_HUGEPAGE in every case but "nohugepage" and "plain")."""
    advice = {"nohugepage": HugeAdvice.NOHUGEPAGE,
              "plain": HugeAdvice.NONE}.get(case, HugeAdvice.HUGEPAGE)
    return HOST_POLICY.allows(advice, disabled)


@pytest.mark.parametrize("case, disabled", [
    ("hugepage", 0), ("read", 0), ("read-then-write", 0), ("nohugepage", 0), ("plain", 0),
    ("disabled", 1), ("except-advised", 3)])
def test_one_touch_shows_what_linux_shows(thp, case, disabled):
    """Each rule: the same lines as natively where Linux's answer is deterministic,
    and by the rules (2 MiB or 4 KiB view) in every case. A block only read shows
    Linux's huge zero page; written after, a huge page of its own (Linux 6.13 on)."""
    native, dune = lines(run_native([thp, case])), lines(run_dune([thp, case]))
    assert dune["get-disable"] == native["get-disable"] == str(disabled)
    huge = expected_huge(case, disabled)
    wanted = huge_view(read_only=case == "read") if huge else SMALL_VIEW
    assert {key: dune[key] for key in wanted} == wanted
    native_got_huge = native["THPeligible"] == "1" and native["present"] == str(PAGES_PER_HUGE)
    if not huge or native_got_huge:
        assert dune == native


def test_madvise_marks_the_mapping_and_splits_it(thp):
    """The advice is the mapping's flag (smaps VmFlags hg / nh), as natively."""
    for case, flags in (("hugepage", "1"), ("nohugepage", "2"), ("plain", "0")):
        assert lines(run_dune([thp, case]))["VmFlags"] == lines(run_native([thp, case]))["VmFlags"] == flags


@pytest.mark.parametrize("setting, huge", [("0", False), ("1", True)])
def test_the_environment_variable_overrides_the_rules(thp, setting, huge):
    """KVMDUNE_HUGE_PAGES=0: never a 2 MiB page, even advised; =1: one wherever it
    fits, even without advice (the old behaviour)."""
    env = {**os.environ, HUGE_PAGES_VARIABLE: setting}
    result = lines(run_dune([thp, "hugepage" if setting == "0" else "plain"], env=env))
    assert result["present"] == (str(PAGES_PER_HUGE) if huge else "1")
    assert result["AnonHugePages"] == (str(HUGE_KB) if huge else "0")


def test_a_system_call_writes_into_memory_never_touched(thp, tmp_path):
    """A read(2) into anonymous memory the program never touched (left to demand
    paging: a 2 MiB block, and the huge zero page of an advised block only read)
    fills it, as Linux's copy_to_user faults the pages in."""
    source = tmp_path / "fill.c"
    source.write_text(r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    char *p = mmap(0, 8 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *block = (char *)(((unsigned long)p + (2 << 20) - 1) & ~((2ul << 20) - 1));
    int fd = open("/proc/self/exe", O_RDONLY);
    long got = read(fd, block + 4096 + 7, 4);
    printf("untouched %ld %.3s\n", got, block + 4096 + 8);
    madvise(block + (2 << 20), 2 << 20, MADV_HUGEPAGE);
    volatile char seen = block[(2 << 20) + 9];
    got = pread(fd, block + (2 << 20) + 9, 4, 0);
    printf("huge-zero %d %ld %.3s\n", seen, got, block + (2 << 20) + 10);
    return 0;
}
""")
    binary = tmp_path / "fill"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(binary), str(source)], check=True)
    native, dune = run_native([str(binary)]), run_dune([str(binary)])
    assert dune.returncode == native.returncode == 0, dune.stderr.decode(errors="replace")
    assert dune.stdout == native.stdout == b"untouched 4 ELF\nhuge-zero 0 4 ELF\n"


def test_this_host_has_a_mode():
    """The rules read the host's mode (this project's machines: madvise)."""
    assert HOST_POLICY.mode in tuple(ThpMode)
