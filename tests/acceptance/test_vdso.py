"""The guest's vDSO (kvmdune/linux/vdso.py): Linux's own code and clock data, so the
clocks run in the guest without a system call and agree with the forwarded calls.

programs/vdso.c prints what the vDSO gives beside the system calls (never backwards
across the two, for every clock) and what Linux's rules for its data pages give
(a page with nothing behind it raises SIGBUS, no write, mprotect refused, munmap
drops it): byte for byte as natively."""

from __future__ import annotations

import os
import re

import pytest

from kvmdune.kvm import probe_platform

from .conftest import LINKS, run_dune, run_native, vmm_env

pytestmark = pytest.mark.kvm
#: Clocks programs/vdso.c reads 2,000 times each that the vDSO serves itself (the
#: CPU-time clocks fall back to the system call inside the vDSO).
VDSO_CLOCKS = 7
CLOCK_NAMES = ("realtime", "monotonic", "process_cputime", "thread_cputime", "monotonic_raw",
               "realtime_coarse", "monotonic_coarse", "boottime", "tai")
ROUNDS = 2000


def _software_kvm() -> bool:
    return probe_platform().guest_reads_host_tsc


def _clock_calls(stderr: bytes) -> int:
    """clock_gettime calls in a --trace (every call is traced, whatever the path)."""
    return len(re.findall(rb"^(?:\[pid +\d+\] )?clock_gettime\(", stderr, re.M))


@pytest.mark.parametrize("link", LINKS)
def test_clocks_and_data_pages_as_natively(compiled, link, syscall_path):
    if not _software_kvm():
        pytest.skip("the guest gets a vDSO only where its rdtsc is the host's (software KVM)")
    argv = [compiled[("vdso", link)]]
    native, dune = run_native(argv), run_dune(argv)
    # The lines that differ first: the stderr holds the probes' expected crash reports.
    assert dune.stdout.decode().splitlines() == native.stdout.decode().splitlines(), \
        dune.stderr.decode(errors="replace")[-1500:]
    assert dune.returncode == native.returncode == 0
    assert b"vdso: yes" in dune.stdout


@pytest.mark.parametrize("link", ["dynamic"])
def test_clock_reads_make_no_system_call(compiled, link, syscall_path):
    if not _software_kvm():
        pytest.skip("the guest gets a vDSO only where its rdtsc is the host's (software KVM)")
    if syscall_path not in (None, "fast"):
        pytest.skip("traced calls all take one path: once is enough")
    argv = [compiled[("vdso", link)]]
    with_vdso = run_dune(argv, "--trace")
    without = run_dune(argv, "--trace", env=vmm_env({**os.environ, "KVMDUNE_VDSO": "0"}))
    assert b"vdso: yes" in with_vdso.stdout and b"vdso: no" in without.stdout
    # What the clocks give is the same without the vDSO.
    assert with_vdso.stdout.split(b"\n")[1:12] == without.stdout.split(b"\n")[1:12]
    # Each clock is read ROUNDS times through the system call itself, either way.
    assert _clock_calls(with_vdso.stderr) >= len(CLOCK_NAMES) * ROUNDS
    # The vDSO's 7 clocks make (almost) no call: libc itself may make a few anyway.
    saved = _clock_calls(without.stderr) - _clock_calls(with_vdso.stderr)
    assert saved > (VDSO_CLOCKS - 1) * ROUNDS, (saved, with_vdso.stderr[-2000:])


@pytest.mark.parametrize("link", LINKS)
def test_old_data_pages_are_gone_after_exec(compiled, link):
    """programs/vdso_exec.c: after an exec, a read of the old image's data pages
    faults, in a forked child that never read them (its exec drops them with no
    memory-slot change: the child's new VM never translated them), in one that
    did, and in the first process; the new image's own pages read as before."""
    if not _software_kvm():
        pytest.skip("the guest gets a vDSO only where its rdtsc is the host's (software KVM)")
    argv = [compiled[("vdso_exec", link)]]
    native, dune = run_native(argv), run_dune(argv)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode == 0
    for how in (b"child, untouched", b"child, read", b"itself, read"):
        assert how + b": old page 0: signal 11" in dune.stdout
        assert how + b": new page 0: signal 0" in dune.stdout
