"""The sandbox's policy compiled into data for the fast path (``SandboxGate.rules``)
and the action table built from it (``fastpath.plan``): a rule never differs from
the verdict the gate gives for any arguments, what must be audited or kill stays
with the gate, and the native server is never handed a call that Python emulates."""

from __future__ import annotations

import io
import os
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmdune.linux import fastpath
from kvmdune.linux.process import RuleKind, forwards_only
from kvmdune.linux.syscall_table import SYSCALLS
from kvmdune.sandbox.guard import SandboxGate
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
    assert "newfstatat" not in by_name and "ioctl" not in by_name and "kill" not in by_name
    assert by_name["unshare"].kind is RuleKind.DENY       # changes identity
    open_rules = SandboxGate(POLICIES["open"]).rules()
    assert all(rule.kind is RuleKind.ALLOW for rule in open_rules.values())
    assert len(open_rules) == len(SYSCALLS)


def test_audit_and_kill_keep_their_calls_at_the_gate():
    policy = POLICIES["strict+lists"]
    audited = SandboxGate(policy, audit=io.StringIO()).rules()
    assert all(rule.kind is RuleKind.ALLOW for rule in audited.values())
    killing = SandboxGate(replace(policy, on_deny=OnDeny.KILL)).rules()
    assert all(rule.kind is RuleKind.ALLOW for rule in killing.values())
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
            assert number in native.FAST_CALLS and forwards_only(spec), spec.name
            assert rules is None or rules[number].kind is RuleKind.ALLOW
        else:
            assert action == native.DENY
            assert rules[number].kind is RuleKind.DENY and errno == rules[number].errno
    if name is None:
        served = {SYSCALLS[n].name for n, (a, _) in fastpath.plan(native, None).items()}
        assert {"read", "write", "getppid", "newfstatat", "fstat"} <= served
        assert not served & {"close", "mmap", "ioctl", "execve", "rt_sigreturn", "gettid"}
