"""fork+exec as shells and spawners do it (issue 14): a child that execs at once, one
that writes its memory first, vfork, posix_spawn, an exec that fails and leaves the
child's memory intact, shared file mappings unmapped and remade (their memory slots
retired and reused) across a fork and an exec. Run natively and under ``kvmdune
run``: stdout and exit status must match byte for byte."""

from __future__ import annotations

import pathlib

import pytest

from .conftest import LINKS, run_dune, run_in_scratch_dirs

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True


@pytest.mark.parametrize("link", LINKS)
def test_fork_exec_patterns_match_native(compiled, link, tmp_path):
    native, dune = run_in_scratch_dirs(compiled[("forkexec", link)], tmp_path)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    # The program saw what it checks (not an early exit that printed little).
    for line in (b"fork+exec: exited 0", b"vfork+exec: exited 0", b"posix_spawn: exited 0",
                 b"memory intact", b"parent sees b: cBBB", b"a again: AAAA AAAA"):
        assert line in dune.stdout


def test_a_shell_loop_of_fork_exec_runs_every_child(tmp_path):
    """bash forking and exec'ing 30 children, each appending to a file."""
    log = tmp_path / "log"
    script = f"for i in $(seq 30); do /bin/echo $i >> {log}; done; /bin/cat {log} | wc -l"
    dune = run_dune(["/bin/bash", "-c", script])
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.stdout.strip() == b"30"
    assert log.read_text().split() == [str(i) for i in range(1, 31)]


@pytest.mark.parametrize("link", LINKS)
def test_fixed_file_mappings_over_a_whole_file_read_their_own_bytes(compiled, link,
                                                                    tmp_path):
    """programs/fixed_over_file.c, ld.so's pattern: parts of a file mapped with
    MAP_FIXED over the whole file mapped before, with the pages underneath untouched
    (their frames then take the new bytes in place) or touched, read the new
    mapping's bytes and zeros past the end of the file, as natively."""
    native, dune = run_in_scratch_dirs(compiled[("fixed_over_file", link)], tmp_path)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    assert b"untouched, read-exec: [131 131 0] [132 132 0] [133 0 2048]" in dune.stdout
    assert b"rewritten, same offset: [128 128 0] [85 85 0] [130 130 0]" in dune.stdout


def test_memory_past_the_first_slot_in_a_child_and_after_clear_refs(compiled, tmp_path):
    """programs/memory_growth.c: a forked child and the first process fill 320 MiB,
    past what a VM registers with KVM at first (its memory then grows into a second
    slot); clear_refs 4 with a thread writing meanwhile moves all memory into one
    slot (KVM's dirty log is per slot); every byte reads back as written."""
    native, dune = run_in_scratch_dirs(compiled[("memory_growth", "dynamic")], tmp_path)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    for line in (b"forked child: exited 0", b"first fill: ok", b"second fill: ok",
                 b"writer thread: went on"):
        assert line in dune.stdout


@pytest.mark.parametrize("link", LINKS)
def test_a_childs_first_accesses_to_deferred_slots_complete(compiled, link, tmp_path):
    """programs/deferred_slots.c: a forked child's shared memory and clock data get
    their memory slots at the child's first access; split reads and writes (which
    KVM completes as MMIO), vector loads (which it cannot emulate: run again) and
    the vDSO clock read as natively."""
    native, dune = run_in_scratch_dirs(compiled[("deferred_slots", link)], tmp_path)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    assert b"split write 102030405060708, written by the child" in dune.stdout


@pytest.mark.parametrize("link", LINKS)
def test_vfork_children_write_their_parents_memory(compiled, link, tmp_path):
    """programs/vfork_memory.c: what a vfork child writes before it execs or exits
    is its parent's, as natively; posix_spawn of a missing program says ENOENT (it
    used to say it started, the child's errno lost with its copy of memory)."""
    native, dune = run_in_scratch_dirs(compiled[("vfork_memory", link)], tmp_path)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    for line in (b"posix_spawn of a missing file: No such file or directory",
                 b"after _exit: data 42, stack 7, heap child, pages pccp, untouched u",
                 b"after exec: data 99"):
        assert line in dune.stdout


def test_a_program_replaced_under_its_name_runs_its_new_bytes(tmp_path):
    """An executable is parsed once per VMM lineage (elf.py keeps it by path and file
    identity): the first process runs ./prog (a copy of bash), which replaces ./prog
    with echo and runs it in a forked child; the child must run echo, not bash again."""
    prog = tmp_path / "prog"
    prog.write_bytes(pathlib.Path("/bin/bash").read_bytes())
    prog.chmod(0o755)
    dune = run_dune(["./prog", "-c", "rm ./prog; cp /bin/echo ./prog; ./prog changed"],
                    cwd=tmp_path)
    assert dune.returncode == 0, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.stdout == b"changed\n"
