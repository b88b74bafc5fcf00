"""The containment corpus (``kvmdune selftest --hostile``): every attack contained,
the supervisor alive, nothing outside the allowed paths changed; and the argument
checker fuzzed with random registers for every system call."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import environment_for

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True


def test_every_hostile_case_is_contained(hostile_corpus, syscall_path):
    from kvmdune.sandbox.selftest import format_table

    outcomes = hostile_corpus(syscall_path)
    assert all(outcome.contained for outcome in outcomes), format_table(outcomes)
    assert len(outcomes) >= 30


#: Options that set a limit: only the cases that have one may be ended by one.
LIMIT_OPTIONS = {"--max-procs", "--mem", "--cpu", "--cpu-total", "--max-fsize", "--wall"}


def test_only_limit_cases_are_contained_by_a_limit(hostile_corpus, syscall_path):
    """The judge counts a kill at a limit (or by SIGKILL) as contained for any case; a
    case without a limit must instead report how it was contained itself — otherwise
    a VMM that dies of its own accord would pass as containment."""
    from kvmdune.sandbox.selftest import LIMIT_STATUSES

    for outcome in hostile_corpus(syscall_path):
        if LIMIT_OPTIONS & set(outcome.case.options):
            continue
        assert outcome.status not in (*LIMIT_STATUSES, -9), outcome
        assert outcome.status == 0, outcome


def test_the_corpus_reports_escapes_when_nothing_contains_it(area, tmp_path):
    """The positive control of the corpus: the same attacks under the open profile,
    as root, succeed — and the harness says so — so 'contained' is not its default."""
    import shutil

    from kvmdune.sandbox.selftest import Case, build_corpus, run_case

    allowed, secret = area
    binary = allowed.parent / "hostile"
    shutil.copy(build_corpus(), binary)
    binary.chmod(0o755)
    unconfined = ("--profile", "open", "--keep-root")
    attacks = [Case("path", (str(secret), "absolute path outside"), unconfined),
               Case("openat-dotdot", (str(allowed), os.path.relpath(secret, allowed)),
                    unconfined),
               Case("hardlink", (str(allowed), str(secret)), unconfined)]
    for case in attacks:
        outcome = run_case(binary, case, allowed.parent, allowed)
        assert not outcome.contained and outcome.observed.startswith("ESCAPED"), outcome


#: The corpus's scratch tree (a new one per run) and addresses in failure reports.
_RUN_SPECIFIC = [(re.compile(r"/tmp/kvmdune-hostile-[^/\s]+"), "<area>"),
                 (re.compile(r"0x[0-9a-f]{6,}"), "<address>")]


def _normalised(text: str) -> str:
    for pattern, replacement in _RUN_SPECIFIC:
        text = pattern.sub(replacement, text)
    return text


def _decision(outcome) -> tuple:
    """What the sandbox decided on one case: the case (name, arguments, options), whether
    it was contained, what was observed and the sandbox's exit status."""
    case = outcome.case
    return (case.name, tuple(_normalised(a) for a in case.args),
            tuple(_normalised(o) for o in case.options), outcome.contained,
            _normalised(outcome.observed), outcome.status)


@pytest.mark.parametrize("path", ["fast", "patched"])
def test_fast_and_slow_paths_decide_the_corpus_the_same_way(hostile_corpus, path):
    """Issues 5 and 13: the decisions are identical with KVMDUNE_FAST_SYSCALLS=1 (call
    sites patched or not) and =0."""
    fast = [_decision(outcome) for outcome in hostile_corpus(path)]
    slow = [_decision(outcome) for outcome in hostile_corpus("slow")]
    assert len(fast) == len(slow) >= 30
    differing = [f"{path}: {f}\nslow: {s}" for f, s in zip(fast, slow) if f != s]
    assert not differing, "\n".join(differing)


#: Scripts whose every answer (output, messages, status) must not depend on the path:
#: calls denied by number alone (denied natively on the fast path), refused paths,
#: and file I/O the native server serves; with what each must show.
DIFFERENTIAL = {
    "denied-by-number": (
        "/bin/busybox pwd -P; echo $?; hostname kvmdune-test; echo $?; uname -s; "
        "ls {allowed}; cat {allowed}/data.txt",
        ("--deny-syscall", "getcwd", "--deny-syscall", "sethostname", "--deny-syscall",
         "uname", "--deny-syscall", "getdents64", "--allow-read", "{allowed}"),
        b"getcwd: Operation not permitted"),
    "killed-on-deny": ("echo before; uname -s; echo after",
                       ("--deny-syscall", "uname", "--on-deny", "kill", "--allow-read", "/etc"),
                       b"uname denied"),
    "refused-paths": ("cat {secret}; echo $?; ln {secret} {allowed}/hard; echo $?; "
                      "cat {allowed}/outside-link; echo $?; kill -9 $PPID; echo $?",
                      ("--allow-write", "{allowed}"), b"Permission denied"),
    "file-io": ("cd {allowed} && echo one > f && cat f data.txt && dd if=data.txt bs=3 count=2 "
                "2>&1 && wc -c f && stat -c '%s %a %F' f data.txt && ls && rm f && ls && "
                "cat /dev/null nothing-here; echo $?",
                ("--allow-write", "{allowed}"), b"13 666 regular file"),
}


@pytest.mark.parametrize("path", ["fast", "patched"])
@pytest.mark.parametrize("name", DIFFERENTIAL)
def test_fast_and_slow_paths_answer_the_same(area, name, path):
    """The same script under the same policy with KVMDUNE_FAST_SYSCALLS=1 and =0: the
    same stdout, stderr and status, byte for byte."""
    allowed, secret = area
    script, options, shown = DIFFERENTIAL[name]
    command = [sys.executable, "-m", "kvmdune", "sandbox",
               *(option.format(allowed=allowed) for option in options), "--", "busybox", "sh",
               "-c", script.format(allowed=allowed, secret=secret)]
    fast, slow = (subprocess.run(command, capture_output=True, timeout=120,
                                 env=environment_for(each)) for each in (path, "slow"))
    assert (fast.stdout, fast.stderr, fast.returncode) == \
           (slow.stdout, slow.stderr, slow.returncode)
    assert shown in fast.stdout + fast.stderr, (fast.stdout, fast.stderr)
    assert b"Traceback" not in fast.stderr


@pytest.fixture(scope="module")
def loaded_process():
    """A real guest process (busybox loaded, not run) to check arguments against."""
    from kvmdune.linux.exec import exec_program
    from kvmdune.linux.process import Process
    from kvmdune.machine import Machine

    machine = Machine(256 << 20)
    new = exec_program(machine, "/bin/busybox", [b"busybox"], [])
    process = Process(machine, log=lambda text: None)
    process.replace_image(new.space, new.mm, new.exe, new.argv, [], new.loaded.entry,
                          new.loaded.sp, new.loaded.auxv)
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
    from kvmdune.linux.host_unsafe import HostBuffer
    from kvmdune.memory import GuestFault
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
        call.check_pointers()
    except (Fault, NotForwardable, GuestFault):
        return      # refused before any host call: nothing reaches the host
    # What reaches the host: pointers only at buffers this process allocated (never a
    # guest address), descriptors only from the guest's own table.
    from kvmdune.linux.syscall_table import DEREF_KINDS, ArgKind, resolve_args

    owned = {id(buffer) for buffer in call.keep}
    guest_fds = {entry.host for entry in loaded_process.fds.entries.values()}
    for arg, original, prepared in zip(resolve_args(spec, args), args, call.host_args):
        if arg is None or prepared == original and arg.kind not in DEREF_KINDS | {ArgKind.FD}:
            continue
        if arg.kind in DEREF_KINDS:
            assert (isinstance(prepared, HostBuffer) and id(prepared) in owned
                    or prepared == 0), arg
        elif arg.kind is ArgKind.FD:
            assert prepared in guest_fds or prepared == original, arg
