"""The containment corpus (``kvmdune selftest --hostile``): every attack contained,
the supervisor alive, nothing outside the allowed paths changed; and the argument
checker fuzzed with random registers for every system call."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.kvm


def test_every_hostile_case_is_contained():
    from kvmdune.sandbox.selftest import format_table, run_corpus

    outcomes = run_corpus()
    assert all(outcome.contained for outcome in outcomes), format_table(outcomes)
    assert len(outcomes) >= 30


@pytest.fixture(scope="module")
def loaded_process():
    """A real guest process (busybox loaded, not run) to check arguments against."""
    from kvmdune.linux.exec import exec_program
    from kvmdune.linux.process import Process
    from kvmdune.machine import Machine

    machine = Machine(256 << 20)
    space, mm, loaded, exe = exec_program(machine, "/bin/busybox", [b"busybox"], [])
    process = Process(machine, log=lambda text: None)
    process.replace_image(space, mm, exe, [b"busybox"], [], loaded.entry, loaded.sp,
                          loaded.auxv)
    yield process
    machine.close()


registers = st.one_of(st.integers(0, (1 << 64) - 1), st.sampled_from(
    [0, 1, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 0x7FFF_FFFF_E000, 0x5555_5555_4000,
     0xFFFF_FFFF_8000_0000, 0x8000_0000_0000_0000, 4096, (1 << 47) - 8]))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=st.integers(0, 470), args=st.tuples(*[registers] * 6))
def test_checker_and_decoder_survive_random_registers(loaded_process, number, args):
    """No host call is made here: the policy decision, the strace decoder and the
    forwarder's argument preparation either accept or refuse, never crash."""
    from kvmdune.linux import strace
    from kvmdune.linux.forward import Call, NotForwardable
    from kvmdune.linux.syscall_table import SYSCALLS
    from kvmdune.linux.uaccess import Fault
    from kvmdune.machine import SyscallEvent
    from kvmdune.sandbox.guard import SandboxGate
    from kvmdune.sandbox.policy import Profile, profile_defaults

    spec = SYSCALLS.get(number)
    if spec is None:
        return
    gate = SandboxGate(profile_defaults(Profile.STRICT))
    gate.check(loaded_process, spec, SyscallEvent(number, args, 0))
    strace.format_line(spec, args, 0, lambda a, n: None)
    call = Call(loaded_process, spec, args[:spec.nargs])
    try:
        call.prepare()
    except (Fault, NotForwardable):
        return      # refused before any host call: nothing reaches the host
    # What reaches the host: pointers only at buffers this process allocated (never a
    # guest address), descriptors only from the guest's own table.
    from kvmdune.linux.syscall_table import DEREF_KINDS, ArgKind, resolve_args

    owned = {buffer.address for buffer in call.keep}
    guest_fds = {entry.host for entry in loaded_process.fds.entries.values()}
    for arg, original, prepared in zip(resolve_args(spec, args), args, call.host_args):
        if arg is None or prepared == original and arg.kind not in DEREF_KINDS | {ArgKind.FD}:
            continue
        if arg.kind in DEREF_KINDS:
            assert prepared in owned or prepared == 0 or prepared == original == 0, arg
        elif arg.kind is ArgKind.FD:
            assert prepared in guest_fds or prepared == original, arg
