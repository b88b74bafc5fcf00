"""The sandbox's policy compiled into data for the fast path (``SandboxGate.rules``)
and the action table built from it (``fastpath.plan``): a rule never differs from
the verdict the gate gives for any arguments, what must be audited or kill stays
with the gate, and the native server is never handed a call that Python emulates."""

from __future__ import annotations

import io
import re
import os
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmdune.linux import fastpath
from kvmdune.linux.gate import RuleKind
from kvmdune.linux.routing import forwards_only
from kvmdune.linux.syscall_table import SYSCALLS
from kvmdune.sandbox.guard import BENEATH_CALLS, SandboxGate
from kvmdune.sandbox.policy import OnDeny, Profile, profile_defaults

POLICIES = {
    profile.value: profile_defaults(profile, os.getcwd()) for profile in Profile
}
POLICIES["strict+lists"] = replace(
    POLICIES["strict"], allow_syscalls=frozenset({"ptrace", "openat"}),
    deny_syscalls=frozenset({"getppid", "uname", "write"}))
POLICIES["open+deny"] = replace(POLICIES["open"], deny_syscalls=frozenset({"read"}))
registers = st.integers(0, (1 << 64) - 1)


@pytest.mark.parametrize("name", POLICIES)
@settings(max_examples=60, deadline=None)
@given(args=st.tuples(*[registers] * 6))
def test_every_rule_is_the_verdict_for_any_arguments(name, args):
    gate = SandboxGate(POLICIES[name])
    for number, rule in gate.rules().items():
        if rule.kind is RuleKind.BENEATH:
            # Only the path decides (checked end to end in test_containment).
            assert gate._by_number(SYSCALLS[number]) is None
            assert SYSCALLS[number].name in BENEATH_CALLS and rule.roots == gate.read_roots
            continue
        verdict = gate._decide(None, SYSCALLS[number], args)   # decided by number: no proc
        if rule.kind is RuleKind.ALLOW:
            assert verdict.allowed, (SYSCALLS[number].name, verdict)
        else:
            assert rule.kind is RuleKind.DENY
            assert not verdict.allowed and verdict.errno == rule.errno


def test_lists_and_profiles_compile_as_expected():
    rules = SandboxGate(POLICIES["strict+lists"]).rules()
    by_name = {SYSCALLS[n].name: rule for n, rule in rules.items()}
    assert by_name["getppid"].kind is RuleKind.DENY and by_name["write"].kind is RuleKind.DENY
    assert by_name["ptrace"].kind is RuleKind.ALLOW      # an explicit allow wins
    assert by_name["read"].kind is RuleKind.ALLOW
    assert by_name["newfstatat"].kind is RuleKind.BENEATH
    assert "openat" not in by_name or by_name["openat"].kind is RuleKind.ALLOW
    assert "unlink" not in by_name and "ioctl" not in by_name and "kill" not in by_name
    assert by_name["unshare"].kind is RuleKind.DENY       # changes identity
    open_rules = SandboxGate(POLICIES["open"]).rules()
    assert all(rule.kind is RuleKind.ALLOW for rule in open_rules.values())
    assert len(open_rules) == len(SYSCALLS)


def test_audit_and_kill_keep_their_calls_at_the_gate():
    policy = POLICIES["strict+lists"]
    audited = SandboxGate(policy, audit=io.StringIO()).rules()
    assert all(rule.kind is not RuleKind.DENY for rule in audited.values())
    killing = SandboxGate(replace(policy, on_deny=OnDeny.KILL)).rules()
    assert all(rule.kind is not RuleKind.DENY for rule in killing.values())
    everything = SandboxGate(POLICIES["trace"], audit=io.StringIO()).rules()
    assert everything == {}


@pytest.mark.parametrize("name", [None, *POLICIES])
def test_the_plan_serves_only_forwarded_allowed_calls(name):
    native = fastpath.native_module()
    if native is None:
        pytest.skip("the native fast path is not built")
    rules = None if name is None else SandboxGate(POLICIES[name]).rules()
    for number, (action, errno) in fastpath.plan(native, rules).items():
        spec = SYSCALLS[number]
        if action == native.FAST:
            assert number in native.FAST_CALLS, spec.name
            assert forwards_only(spec) or spec.name in fastpath.NATIVE_EMULATIONS, spec.name
            assert rules is None or rules[number].kind is RuleKind.ALLOW
        elif action == native.BENEATH:
            assert number in native.BENEATH_CALLS and rules[number].kind is RuleKind.BENEATH
        else:
            assert action == native.DENY
            assert rules[number].kind is RuleKind.DENY and errno == rules[number].errno
    if name is None:
        served = {SYSCALLS[n].name for n, (a, _) in fastpath.plan(native, None).items()}
        assert {"read", "write", "getppid", "newfstatat", "fstat"} <= served
        # The descriptor table's own calls are served on the native table (issue 13).
        assert {"close", "dup", "dup2", "dup3", "fcntl", "openat"} <= served
        # rt_sigaction on the dispositions' native store; ioctl's terminal queries
        # on what is no terminal (every other request is handed back).
        assert {"rt_sigaction", "ioctl"} <= served
        assert not served & {"mmap", "execve", "rt_sigreturn", "gettid"}


@pytest.mark.kvm
def test_stat_beneath_the_roots_decides_like_the_gate(tmp_path):
    """stat calls the fast path resolves itself (beneath a read root) and those it
    must leave to the gate (outside, through a symlink leading out, ``..`` out of
    the root, /proc): the same answers with the fast path on and off, and nothing
    outside is ever described."""
    import subprocess
    import sys

    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "data.txt").write_text("data\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("secret\n")
    os.symlink(secret, allowed / "outside-link")
    os.symlink("data.txt", allowed / "inside-link")
    os.symlink("../../secret.txt", allowed / "sub" / "relative-out")
    script = ("cd {a}/sub; for p in {a}/data.txt {a}/inside-link {a}/outside-link {s} "
              "{a}/../secret.txt ../data.txt ../../secret.txt relative-out {a}/missing "
              "/proc/self/exe; do stat -c '%n %s %F' $p; echo \"$p $?\"; "
              "stat -L -c '%n %s' $p; echo \"L $?\"; done").format(a=allowed, s=secret)
    command = [sys.executable, "-m", "kvmdune", "sandbox", "--keep-root", "--allow-read",
               str(allowed), "--syscall-stats", "--", "busybox", "sh", "-c", script]
    runs = {}
    for setting in ("1", "0"):
        runs[setting] = subprocess.run(command, capture_output=True, timeout=120,
                                       env={**os.environ, "KVMDUNE_FAST_SYSCALLS": setting})
    fast, slow = runs["1"], runs["0"]
    assert fast.stdout == slow.stdout and fast.returncode == slow.returncode
    lines = fast.stdout.decode().splitlines()
    assert f"{allowed}/data.txt 5 regular file" in lines
    assert f"{allowed}/inside-link 5" in lines                  # followed, inside
    described = [line for line in lines if line.split(" ")[1:2] == ["7"]]
    assert described == [], described                           # the secret's size
    assert re.search(r"served natively", fast.stderr.decode())
