"""Policies: profiles, files, options and their precedence (no KVM needed)."""

from __future__ import annotations

import pytest

from kvmdune.sandbox.policy import (NetMode, PolicyError, Profile, load_policy_file, merge,
                                    profile_defaults)


def test_strict_profile_reads_only_libraries_and_devices():
    policy = profile_defaults(Profile.STRICT)
    assert "/lib" in policy.read and "/dev/urandom" in policy.read
    assert policy.write == ("/dev/null",) and policy.net is NetMode.NONE
    assert not policy.all_paths


def test_options_add_to_lists_and_replace_single_values(tmp_path):
    policy = merge(profile_defaults(Profile.STRICT), read=["data"], net="loopback",
                   deny_syscalls=["getpid"], allow_syscalls=["getpid"],
                   limits={"memory": "128M", "wall": 2}, base=str(tmp_path))
    assert str(tmp_path / "data") in policy.read and "/lib" in policy.read
    assert policy.net is NetMode.LOOPBACK
    assert policy.limits.memory == 128 << 20 and policy.limits.wall == 2.0
    assert "getpid" in policy.deny_syscalls   # denied wins at enforcement


def test_policy_file_then_command_line(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('profile = "readonly"\nnetwork = "loopback"\n'
                    '[paths]\nwrite = ["out"]\n[limits]\ncpu = 5\n'
                    '[syscalls]\ndeny = ["uname"]\n')
    policy = load_policy_file(str(path))
    assert policy.profile is Profile.READONLY and str(tmp_path / "out") in policy.write
    policy = merge(policy, net="none", source="command line")
    assert policy.net is NetMode.NONE and policy.limits.cpu == 5.0
    assert policy.describe()["built_from"] == ["profile readonly", f"file {path}", "command line"]


@pytest.mark.parametrize("text,message", [
    ('profile = "lax"', "lax"),
    ("network = 'wifi'", "wifi"),
    ("[syscalls]\ndeny = ['no_such_call']", "no_such_call"),
    ("[limits]\nmemory = 'lots'", "not a size"),
    ("[limits]\nstack = 1", "unknown limit"),
    ("surprise = 1", "unknown keys"),
    ("not toml at all [", "not valid TOML"),
])
def test_bad_policy_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy_file(str(path))
    assert message in str(info.value)
