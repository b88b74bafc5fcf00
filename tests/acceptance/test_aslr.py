"""Address-space layout randomization under ``kvmdune run``, against Linux's own: the
program, the stack, the brk heap and the mmap area move between runs with Linux's
alignment; ``setarch -R`` (of the VMM, or of the guest before its execve) fixes
them at Linux's non-random addresses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from kvmdune.machine import layout

from .conftest import LINKS, run_dune, run_native, vmm_env

pytestmark = pytest.mark.kvm
SETARCH = shutil.which("setarch") or "setarch"
NO_RANDOMIZE = [SETARCH, "x86_64", "-R"]
#: One environment for native and guest runs alike: the strings on the stack (and so
#: every address below them) depend on it. LC_ALL keeps Python from adding LC_CTYPE.
ENV = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C.UTF-8"}
#: What the layout program prints, and which of it each kind of link randomizes.
HEAP = ["stack", "brk", "small", "large", "mmap", "random", "execfn"]
MOVES = {"static": HEAP, "static-pie": ["main", *HEAP], "dynamic": ["main", *HEAP]}


def addresses(result) -> dict[str, int]:
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return addresses_of(result.stdout.decode().splitlines())


def addresses_of(lines: list[str]) -> dict[str, int]:
    return {name: int(value, 16) for name, value in (line.split() for line in lines)}


def dune(argv, *, env=ENV):
    return addresses(run_dune(argv, env=env))


def native(argv):
    return addresses(run_native(argv, env=vmm_env(ENV)))


def dune_without_randomization(argv):
    """``setarch -R kvmdune run -- ...``: the VMM's own personality."""
    return addresses(subprocess.run(
        [*NO_RANDOMIZE, sys.executable, "-m", "kvmdune", "run", "--", *argv],
        capture_output=True, timeout=300, env=vmm_env(ENV)))


@pytest.mark.parametrize("link", LINKS)
def test_two_runs_differ_everywhere_linux_randomizes(compiled, link):
    program = [compiled[("layout", link)]]
    first, second = dune(program), dune(program)
    for name in MOVES[link]:
        assert first[name] != second[name], name
    # Positive control for the comparison: what Linux never moves stays put.
    assert first["end"] - first["main"] == second["end"] - second["main"]
    if link == "static":
        assert first["main"] == second["main"]


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_the_initial_stack_pointer_moves_within_its_page(compiled, link):
    """arch_align_stack: between the strings (execfn) and AT_RANDOM a random gap of
    up to 8 KiB, natively and here (three runs: the same gap thrice by chance has
    odds of 1 in 2^18)."""
    program = [compiled[("layout", link)]]
    for run in (native, dune):
        gaps = {found["execfn"] - found["random"] for found in (run(program) for _ in range(3))}
        assert len(gaps) > 1, run.__name__
        assert all(0 < gap < 8192 + 4096 for gap in gaps)
    fixed = {found["execfn"] - found["random"]
             for found in (dune_without_randomization(program) for _ in range(2))}
    assert len(fixed) == 1


@pytest.mark.parametrize("link", LINKS)
def test_alignment_and_ranges_are_linuxs(compiled, link):
    program = [compiled[("layout", link)]]
    ours, linux = dune(program), native(program)
    # Page offsets of what moves in whole pages; the 16-byte phase of what
    # arch_align_stack moves by bytes.
    for name, bits in [("main", 12), ("end", 12), ("brk", 12), ("mmap", 12), ("large", 12),
                       ("execfn", 12), ("random", 4), ("stack", 4)]:
        mask = (1 << bits) - 1
        assert ours[name] & mask == linux[name] & mask, name
    # The same ranges hold for both (Linux's stack ends at TASK_SIZE, ours below the
    # call area).
    check_ranges(ours, link, layout.STACK_TOP)
    check_ranges(linux, link, layout.TASK_SIZE)


def check_ranges(found: dict[str, int], link: str, stack_top: int) -> None:
    """The stack top at most 16 GiB (and two pages) below its fixed place; the brk within 1 GiB above
    the image (static-pie: above ELF_ET_DYN_BASE; a static C library takes some
    before main); a PIE within 1 TiB above ELF_ET_DYN_BASE; the mmap area at most
    1 TiB and 16 GiB below the stack gap."""
    assert stack_top - (16 << 30) - 0x2000 < found["execfn"] < stack_top
    brk_floor = layout.ELF_ET_DYN_BASE if link == "static-pie" else found["end"]
    assert brk_floor < found["brk"] < brk_floor + (1 << 30) + (1 << 20)
    if link == "dynamic":
        assert layout.ELF_ET_DYN_BASE < found["main"] < layout.ELF_ET_DYN_BASE + (1 << 40)
    for name in ("large", "mmap"):
        assert layout.TASK_SIZE - (1 << 40) - (17 << 30) < found[name] < layout.TASK_SIZE - (16 << 30)


@pytest.mark.parametrize("link", LINKS)
def test_setarch_r_gives_linuxs_fixed_layout(compiled, link):
    program = [compiled[("layout", link)]]
    first, second = dune_without_randomization(program), dune_without_randomization(program)
    assert first == second
    linux = addresses(run_native([*NO_RANDOMIZE, *program], env=vmm_env(ENV)))
    # The image and the brk heap are where Linux puts them (PIE: 0x555555554000 + its
    # offsets; static-pie: the top of the mmap area) ...
    for name in ("main", "end", "brk"):
        assert first[name] == linux[name], name
    if link == "dynamic":
        assert first["main"] & ~0xFFF == 0x5555_5555_5000
    # ... and the stack's strings exactly the call area lower (the stack ends below it).
    for name in ("execfn", "random"):
        assert linux[name] - first[name] == layout.CALL_AREA_SIZE, name
    # Linux's layout is not random here: the native runs agree with each other too.
    assert addresses(run_native([*NO_RANDOMIZE, *program], env=vmm_env(ENV))) == linux


def test_the_guests_own_setarch_r_is_honoured(compiled):
    program = [compiled[("layout", "dynamic")]]
    inside = dune([*NO_RANDOMIZE, *program])
    assert inside == dune([*NO_RANDOMIZE, *program])
    outside = dune_without_randomization(program)
    for name in ("main", "brk", "end"):
        assert inside[name] == outside[name], name
    # Positive control: the same setarch without -R leaves randomization on.
    plain = [SETARCH, "x86_64", *program]
    assert dune(plain)["main"] != dune(plain)["main"]


def test_each_execve_draws_a_new_layout(compiled):
    program = compiled[("layout", "dynamic")]
    busybox = shutil.which("busybox") or "/bin/busybox"
    result = run_dune([busybox, "sh", "-c", f"{program}; {program}"], env=ENV)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    lines = result.stdout.decode().splitlines()
    half = len(lines) // 2
    first, second = addresses_of(lines[:half]), addresses_of(lines[half:])
    for name in MOVES["dynamic"]:
        assert first[name] != second[name], name


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_a_forked_child_keeps_the_layout(compiled, link):
    """fork copies the layout (the child's next mmap lands where the parent's does),
    natively and here; execve, above, draws a new one."""
    argv = [compiled[("layout", link)], "fork"]
    for found in (native(argv), dune(argv)):
        assert found["child_mmap"] == found["parent_mmap"]
        assert layout.MMAP_MIN_ADDR <= found["parent_mmap"] < layout.TASK_SIZE


@pytest.mark.parametrize("prefix", [[], NO_RANDOMIZE], ids=["plain", "setarch-R"])
def test_proc_self_personality_is_the_guests(prefix):
    argv = [*prefix, shutil.which("cat") or "/bin/cat", "/proc/self/personality"]
    linux, ours = run_native(argv, env=vmm_env(ENV)), run_dune(argv, env=ENV)
    assert ours.returncode == 0, ours.stderr.decode(errors="replace")[-3000:]
    assert ours.stdout == linux.stdout == (b"00040000\n" if prefix else b"00000000\n")
