"""What a user sees when a command cannot do its job: one line that says what happened
and what to do, a meaningful exit status, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

#: A user who cannot open a root-only /dev/kvm. Python and this checkout live under
#: /root (mode 0700) here, so the user keeps CAP_DAC_READ_SEARCH to read them: it
#: grants reading and searching, never the write access /dev/kvm's open needs.
UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


def kvmdune(*args: str, env: dict | None = None, prefix: tuple[str, ...] = (),
            cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "kvmdune", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **(env or {})})


def assert_one_message(result: subprocess.CompletedProcess, *words: str) -> None:
    """The command said one line on stderr holding ``words``, and nothing else."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], result.stderr


def assert_usage_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """argparse's usage line and one error line, status 2."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage:"), result.stderr
    for word in words:
        assert word in lines[1], result.stderr


@pytest.mark.parametrize("size, words", [
    ("3M", ("--memory", "2M pages", "4M")),
    ("garbage", ("--memory", "not a size")),
    ("0", ("--memory", "positive")),
    ("9T", ("--memory", "at most")),
])
def test_run_memory_refused_with_the_reason(size, words):
    assert_usage_error(kvmdune("run", "--memory", size, "--", "true"), *words)


@pytest.mark.parametrize("options", [["--samples", "x"], ["--samples", "0"],
                                     ["--samples", "-1"], ["--bogus"]])
def test_bench_bad_options_refused(options):
    result = kvmdune("bench", "core", *options)
    assert_usage_error(result, "error:")


def test_bench_without_suite_lists_the_suites():
    result = kvmdune("bench")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "syscalls" in result.stdout and "core" in result.stdout


def test_run_without_program():
    result = kvmdune("run")
    assert result.returncode == 2
    assert_one_message(result, "no program given")


def test_run_without_kvm_device_says_so(tmp_path):
    result = kvmdune("run", "--", "true", env={"KVMDUNE_KVM_DEVICE": str(tmp_path / "none")})
    assert result.returncode == 125
    assert_one_message(result, "does not exist", "modprobe")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to become a user without access to /dev/kvm")
def test_run_as_user_without_kvm_access_says_what_to_do():
    control = subprocess.run([*UNPRIVILEGED, "id", "-u"], capture_output=True, text=True)
    assert control.stdout == "65534\n"
    # Positive control: the same command reads this checkout as that user...
    listed = kvmdune("syscalls", "--only", "refused", prefix=tuple(UNPRIVILEGED))
    assert listed.returncode == 0 and "ptrace" in listed.stdout, listed.stderr
    # ... and `run` fails on /dev/kvm alone, with the advice `info` gives.
    result = kvmdune("run", "--", "true", prefix=tuple(UNPRIVILEGED))
    assert result.returncode == 125
    assert_one_message(result, "no permission to open /dev/kvm", "EACCES", "run kvmdune as root")


@pytest.mark.kvm
@pytest.mark.parametrize("make, status, words", [
    (lambda d: str(d / "missing"), 127, ("missing", "No such file")),
    (lambda d: str(d), 126, ("directory",)),
    (lambda d: _file(d / "notexec", b"echo hi\n", 0o644), 126, ("notexec", "Permission denied")),
    (lambda d: _file(d / "arm", b"\x7fELF\x01\x01\x01" + bytes(200), 0o755), 126,
     ("arm", "32-bit ELF", "x86-64")),
    (lambda d: "no-such-command-here", 127, ("no-such-command-here", "command not found")),
])
def test_run_programs_that_cannot_start(tmp_path, make, status, words):
    result = kvmdune("run", "--", make(tmp_path))
    assert result.returncode == status, result.stderr
    assert_one_message(result, *words)


@pytest.mark.kvm
def test_run_program_larger_than_guest_memory():
    result = kvmdune("run", "--memory", "2M", "--", "busybox", "true")
    assert result.returncode == 126
    assert_one_message(result, "busybox", "2 MiB of guest memory", "--memory")
    # Positive control: with room it runs.
    assert kvmdune("run", "--memory", "64M", "--", "busybox", "true").returncode == 0


def test_run_guest_memory_that_cannot_be_reserved():
    """An address-space limit below the reservation: the mmap itself fails."""
    result = subprocess.run(
        ["sh", "-c", 'ulimit -v 2000000 && exec "$0" -m kvmdune run --memory 4G -- true',
         sys.executable], capture_output=True, text=True, timeout=120)
    assert result.returncode == 125, result.stderr
    assert_one_message(result, "cannot reserve 4096 MiB", "--memory")


def test_trace_file_that_cannot_be_opened(tmp_path):
    result = kvmdune("run", f"--trace={tmp_path}/no/such/dir/trace", "--", "true")
    assert result.returncode == 125
    assert_one_message(result, "No such file or directory")


def test_syscalls_into_a_closed_pipe_ends_quietly():
    """`kvmdune syscalls | head -1` once head has gone: no BrokenPipeError."""
    read_end, write_end = os.pipe()
    os.close(read_end)                    # the reader has left before the first write
    try:
        writer = subprocess.run([sys.executable, "-m", "kvmdune", "syscalls"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True,
                                timeout=120)
    finally:
        os.close(write_end)
    assert writer.stderr == ""
    assert writer.returncode == 141      # 128 + SIGPIPE, as `seq 9 | true` ends seq
    # Positive control: into an open pipe the listing is printed.
    listed = kvmdune("syscalls")
    assert listed.returncode == 0 and "ptrace" in listed.stdout


def _file(path, data: bytes, mode: int) -> str:
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)
