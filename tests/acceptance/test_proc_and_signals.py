"""/proc/self names the guest; signals from outside reach the guest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import run_dune

pytestmark = pytest.mark.kvm


def sh(script: str) -> subprocess.CompletedProcess:
    return run_dune(["busybox", "sh", "-c", script])


def test_proc_self_exe_cmdline_comm_status_match_native():
    script = ("readlink /proc/self/exe; cat /proc/self/cmdline | tr '\\0' ' '; echo; "
              "cat /proc/self/comm; grep ^Name /proc/self/status; "
              "tr '\\0' ' ' < /proc/self/cmdline; echo")
    native = subprocess.run(["busybox", "sh", "-c", script], capture_output=True)
    assert sh(script).stdout == native.stdout


def test_proc_self_maps_shows_the_guest_memory():
    result = sh("cat /proc/self/maps")
    text = result.stdout.decode()
    assert "busybox" in text and "[stack]" in text
    assert "python" not in text and "kvm" not in text


def test_proc_self_fd_lists_guest_descriptors_only():
    result = run_dune([sys.executable, "-c",
                       "import os; print(sorted(os.listdir('/proc/self/fd'), key=int))"])
    assert result.stdout.strip() == b"['0', '1', '2', '3']", result.stderr


@pytest.mark.parametrize("entry", ["mem", "pagemap", "syscall", "environ/../mem"])
def test_vmm_revealing_entries_are_refused(entry):
    result = sh(f"cat /proc/self/{entry} > /dev/null && echo opened || echo refused")
    assert result.stdout == b"refused\n"


def test_proc_of_own_pid_is_the_guest_too():
    result = sh("readlink /proc/$$/exe")
    assert result.stdout.strip().endswith(b"busybox")


def test_sigint_from_outside_ends_the_guest_like_a_shell_reports_it():
    process = subprocess.Popen([sys.executable, "-m", "kvmdune", "run", "--", "busybox",
                                "sleep", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGINT


def test_guest_handles_sigterm_sent_from_outside():
    script = "trap 'echo caught; exit 9' TERM; echo ready; while :; do sleep 0.1; done"
    process = subprocess.Popen([sys.executable, "-m", "kvmdune", "run", "--", "busybox", "sh",
                                "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline() == b"ready\n"
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert out == b"caught\n" and process.returncode == 9


@pytest.mark.parametrize("path", [
    "/proc/self/root/proc/self/mem",
    "/proc/$$/task/$$/mem",
    "/proc/$$/fdinfo/0",
    "/proc/thread-self/mem",
    "link-to-mem",                 # a symlink the guest planted: checked on what opened
    "/proc/$PPID/mem",             # another process (maybe another guest's VMM)
    "/proc/$PPID/fd/0",
])
def test_ways_around_to_vmm_memory_and_descriptors_are_refused(tmp_path, path):
    script = (f"cd {tmp_path} && ln -s /proc/self/mem link-to-mem && "
              f"(cat {path} > /dev/null 2>&1 && echo opened || echo refused)")
    assert sh(script).stdout == b"refused\n"


def test_dev_fd_names_guest_descriptors():
    result = run_dune(["/bin/bash", "-c", "cat <(echo substituted); echo to-stderr > /dev/stderr"])
    assert result.stdout == b"substituted\n" and result.stderr == b"to-stderr\n"
