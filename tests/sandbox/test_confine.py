"""The VMM's own confinement (kvmdune/sandbox/confine.py): from the VMM's side, a
host call outside the seccomp list is refused while the listed ones work, Landlock
keeps files to the policy's roots, both reach threads made before and processes
forked after; from the guest's side, a supervisor whose checks are broken still
cannot hand the guest a file outside the policy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from kvmdune.sandbox import confine
from kvmdune.sandbox.guard import SandboxGate
from kvmdune.sandbox.policy import Profile, merge, profile_defaults


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (the confinement cannot be undone)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=120, cwd=os.getcwd())


CONFINED_CHILD = """
    import ctypes, errno, os, sys, threading
    from kvmdune.sandbox.guard import SandboxGate
    from kvmdune.sandbox.policy import merge, profile_defaults, Profile

    readable, writable, outside = sys.argv[1:4]
    libc = ctypes.CDLL(None, use_errno=True)
    def call(number, *args):
        result = libc.syscall(number, *[ctypes.c_long(a) for a in args])
        return result if result >= 0 else -ctypes.get_errno()

    kvm = os.open("/dev/kvm", os.O_RDWR) if os.path.exists("/dev/kvm") else -1
    before = open(os.path.join(outside, "secret")).read()      # positive control
    waiting = threading.Event(); results = {}
    def thread_made_before():
        waiting.wait()
        results["thread ptrace"] = call(101, 0, 0, 0, 0)        # PTRACE_TRACEME
    helper = threading.Thread(target=thread_made_before); helper.start()

    policy = merge(profile_defaults(Profile.STRICT), read=[readable], write=[writable])
    SandboxGate(policy, confine=True)._confine()

    def outcome(what, action):
        try:
            value = action()
            print(what, "ok" if value is None or value >= 0 else errno.errorcode[-value])
        except OSError as exc:
            print(what, errno.errorcode[exc.errno])
    outcome("execve", lambda: os.execv("/bin/true", ["true"]))
    outcome("ptrace", lambda: call(101, 0, 0, 0, 0))
    outcome("unshare", lambda: call(272, 0x20000))                # CLONE_NEWUTS
    outcome("mount", lambda: call(165, 0, 0, 0, 0, 0))
    outcome("ioctl TIOCSTI", lambda: call(16, 0, 0x5412, 0))
    outcome("prctl dumpable 1", lambda: call(157, 4, 1, 0, 0, 0))
    outcome("getpid", lambda: call(39))
    outcome("prctl dumpable 0", lambda: call(157, 4, 0, 0, 0, 0))
    outcome("prctl set name", lambda: call(157, 15, ctypes.addressof(
        ctypes.create_string_buffer(b"guest-name")), 0, 0, 0))
    outcome("prctl set mm", lambda: call(157, 35, 8, 0, 0, 0))   # PR_SET_MM_ARG_START
    outcome("ioctl TCGETS", lambda: call(16, os.open("/dev/null", os.O_RDONLY), 0x5401,
                                         ctypes.addressof(ctypes.create_string_buffer(64))))
    if kvm >= 0:
        outcome("KVM_GET_API_VERSION", lambda: call(16, kvm, 0xAE00, 0))
    outcome("read allowed", lambda: open(os.path.join(readable, "data")).read() and None)
    outcome("read outside", lambda: open(os.path.join(outside, "secret")).read() and None)
    outcome("write read-only", lambda: open(os.path.join(readable, "new"), "w") and None)
    outcome("write allowed", lambda: open(os.path.join(writable, "new"), "w").close())
    waiting.set(); helper.join()
    print("thread ptrace", errno.errorcode[-results["thread ptrace"]])
    pid = os.fork()
    if pid == 0:
        outcome("child ptrace", lambda: call(101, 0, 0, 0, 0))
        outcome("child read outside",
                lambda: open(os.path.join(outside, "secret")).read() and None)
        os._exit(0)
    os.waitpid(pid, 0)
"""


@pytest.fixture
def trees(tmp_path):
    readable, writable, outside = (tmp_path / name for name in ("r", "w", "o"))
    for directory in (readable, writable, outside):
        directory.mkdir()
    (readable / "data").write_text("data")
    (outside / "secret").write_text("secret")
    return readable, writable, outside


def test_host_calls_outside_the_list_are_refused_and_listed_ones_work(trees):
    if not confine.landlock_abi():
        pytest.skip("this kernel offers no Landlock")
    result = run_python(CONFINED_CHILD, *map(str, trees))
    assert result.returncode == 0, result.stderr
    seen = dict(line.rsplit(" ", 1) for line in result.stdout.splitlines())
    refused = {"execve", "ptrace", "unshare", "mount", "ioctl TIOCSTI", "prctl dumpable 1",
               "prctl set mm",
               "thread ptrace", "child ptrace"}
    assert {what: seen[what] for what in refused} == dict.fromkeys(refused, "EPERM")
    allowed = {"getpid", "prctl dumpable 0", "prctl set name", "read allowed",
               "write allowed"}
    assert {what: seen[what] for what in allowed} == dict.fromkeys(allowed, "ok")
    assert seen["ioctl TCGETS"] == "ENOTTY"            # reached the kernel: not EPERM
    if "KVM_GET_API_VERSION" in seen:
        assert seen["KVM_GET_API_VERSION"] == "ok"
    assert seen["read outside"] == seen["child read outside"] == "EACCES"
    assert seen["write read-only"] == "EACCES"


def test_the_list_is_the_vmms_calls_plus_what_the_policy_forwards():
    strict = SandboxGate(profile_defaults(Profile.STRICT)).confinement().calls
    names = {spec.name for spec in confine.BY_NAME.values() if spec.number in strict.numbers}
    assert {"ioctl", "mmap", "futex", "openat", "openat2", "clone", "read"} <= names
    assert not names & {"execve", "execveat", "ptrace", "process_vm_readv", "mount",
                        "unshare", "setns", "bpf", "init_module", "kexec_load", "seccomp",
                        "chroot", "pivot_root", "userfaultfd", "io_uring_setup"}
    assert "setsid" not in names                        # strict denies it to the guest
    opened = SandboxGate(merge(profile_defaults(Profile.STRICT),
                               allow_syscalls=["setsid"])).confinement().calls
    assert BY_NAME_NUMBER("setsid") in opened.numbers   # allowed once the policy forwards it
    denied = SandboxGate(merge(profile_defaults(Profile.STRICT),
                               deny_syscalls=["uname"])).confinement().calls
    assert BY_NAME_NUMBER("uname") in strict.numbers and BY_NAME_NUMBER("uname") not in \
        denied.numbers
    assert strict.ioctl_requests is not None and 0x5412 not in strict.ioctl_requests
    everything = SandboxGate(profile_defaults(Profile.OPEN)).confinement()
    assert everything.calls.ioctl_requests is None and everything.files is None


def BY_NAME_NUMBER(name: str) -> int:
    return confine.BY_NAME[name].number


def test_the_filter_searches_in_few_steps():
    calls = SandboxGate(profile_defaults(Profile.STRICT)).confinement().calls
    program = confine.build_filter(calls)
    assert len(program) % 8 == 0 and len(program) // 8 < confine.BPF_MAXINSNS


BROKEN_GATE = """
    import sys
    from kvmdune.linux.runner import RunOptions, run_command
    from kvmdune.sandbox.guard import SandboxGate, allow
    from kvmdune.sandbox.policy import merge, profile_defaults, Profile

    allowed, secret, confined = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    policy = merge(profile_defaults(Profile.STRICT), read=[allowed],
                   execute=["/usr/bin/busybox", "/bin/busybox"])
    gate = SandboxGate(policy, confine=confined)
    gate._decide = lambda proc, spec, args: allow("a bug: everything allowed")
    gate.check_opened = lambda proc, host_fd: None
    status = run_command(["busybox", "cat", f"{allowed}/data.txt", secret],
                         options=RunOptions(gate=gate))
    sys.exit(status)
"""


@pytest.mark.kvm
def test_a_broken_supervisor_still_cannot_hand_out_a_file_outside_the_policy(area):
    if not confine.landlock_abi():
        pytest.skip("this kernel offers no Landlock")
    allowed, secret = area
    broken = run_python(BROKEN_GATE, str(allowed), str(secret), "0")
    assert broken.stdout == "allowed data\nsecret\n"       # the bug, unconfined: a leak
    confined = run_python(BROKEN_GATE, str(allowed), str(secret), "1")
    assert confined.stdout == "allowed data\n", confined.stderr
    assert "Permission denied" in confined.stderr and "Traceback" not in confined.stderr


@pytest.mark.kvm
def test_the_vmm_and_its_forked_guests_are_confined(syscall_path):
    script = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; sleep 0 & wait"
    command = [sys.executable, "-m", "kvmdune", "sandbox", "--", "busybox", "sh", "-c",
               f"{script}; busybox sh -c \"{script}\""]
    confined = subprocess.run(command, capture_output=True, timeout=120)
    assert confined.stdout == b"NoNewPrivs:\t1\nSeccomp:\t2\n" * 2, confined.stderr
    unconfined = subprocess.run(command[:4] + ["--no-confine"] + command[4:],
                                capture_output=True, timeout=120)
    assert unconfined.stdout == b"NoNewPrivs:\t0\nSeccomp:\t0\n" * 2, unconfined.stderr


def test_every_name_the_lists_give_is_a_real_call():
    """A typo would silently leave a call the VMM needs out of the filter."""
    unknown = (set(confine.VMM_CALLS) | confine.NEVER_ON_HOST) - set(confine.BY_NAME)
    assert not unknown
    assert all(reason for reason in confine.VMM_CALLS.values())


def test_held_paths_keep_directory_rights_after_a_file(trees):
    """A file's rule is narrowed to file rights; the directories after it are not."""
    readable, writable, _ = trees
    rules = confine.FileRules.hold([str(readable / "data"), str(readable)], [str(writable)],
                                   no_tcp=False)
    try:
        access = {held.path: held.access for held in rules.held}
        assert access[str(readable / "data")] == confine.READ_ACCESS & confine.FILE_ACCESS
        assert access[str(readable)] == confine.READ_ACCESS
        assert access[str(writable)] == confine.WRITE_ACCESS
    finally:
        rules.release()
