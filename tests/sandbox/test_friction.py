"""Issue 9's sandbox friction, each on real programs beside the native run:
realpath of an allowed file, ENOENT in the audit log, notes naming the option that
would allow a denial, and the hint when the drop to ``nobody`` hides the program."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kvm

BASH = "/bin/bash-static"


def sandbox(*args: str, cwd: str = "/") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmdune", "sandbox", *args],
                          capture_output=True, timeout=120, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


def native(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=60, cwd="/")


def notes(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.decode().splitlines()
            if line.startswith("kvmdune sandbox: ")]


def test_realpath_of_an_allowed_file_is_the_native_answer(area, syscall_path):
    allowed, _ = area
    link = allowed / "link-to-data"
    os.symlink("data.txt", link)
    script = (f"realpath {allowed}/data.txt; readlink -f {link}; echo $?; "
              f"readlink {allowed.parent}; echo readlink-dir $?; readlink /; echo $?; "
              f"stat -c '%n %F' / {allowed.parent}")
    argv = ("busybox", "sh", "-c", script)
    mine = sandbox("--allow-read", str(allowed), "--", *argv)
    theirs = native(*argv)
    assert mine.stdout == theirs.stdout, mine.stderr
    assert f"{allowed}/data.txt\n{allowed}/data.txt\n0\n".encode() in mine.stdout
    assert b"readlink-dir 1" in mine.stdout          # EINVAL: a directory, not a link
    # bash's `cd -P` and `pwd -P` walk the ancestors too.
    bash = (BASH, "-c", f"cd -P {link}/.. && pwd -P")
    assert sandbox("--allow-read", str(allowed), "--", *bash).stdout == native(*bash).stdout


def test_ancestors_are_described_but_not_listed(area):
    allowed, secret = area
    script = (f"ls {allowed.parent}; echo ls-parent $?; ls {allowed}; echo ls-allowed $?; "
              f"stat -c %s {secret}; echo stat-secret $?")
    result = sandbox("--allow-read", str(allowed), "--", "busybox", "sh", "-c", script)
    out = result.stdout.decode()
    assert "ls-parent 1" in out and "secret.txt" not in out
    assert "data.txt" in out and "ls-allowed 0" in out        # positive control
    assert "stat-secret 1" in out and "\n7\n" not in out       # a sibling file: no


def test_enoent_is_recorded_as_what_it_is_not_as_a_denial(area, tmp_path, syscall_path):
    allowed, secret = area
    audit = tmp_path / "audit.jsonl"
    sandbox("--allow-read", str(allowed), "--audit", str(audit), "--", "busybox", "sh",
            "-c", f"cat {allowed}/missing/file; cat {secret}")
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    by_path = {r["args"].get("pathname"): r for r in records if r["syscall"] == "openat"}
    missing = by_path[f"{allowed}/missing/file"]
    assert missing["decision"] == "error" and missing["errno"] == "ENOENT"
    assert by_path[str(secret)]["decision"] == "deny"            # a real denial still is
    assert "outside the read paths" in by_path[str(secret)]["rule"]


def test_a_denial_names_the_option_once(area):
    allowed, secret = area
    script = f"cat {secret}; cat {secret}; cat {allowed}/data.txt"
    result = sandbox("--", "busybox", "sh", "-c", script)
    about_secret = [line for line in notes(result) if str(secret) in line]
    assert about_secret == [f"kvmdune sandbox: openat denied: {secret} is outside the read "
                            f"paths; --allow-read {secret} would allow it (--quiet: no "
                            "such notes)"]
    assert any(f"--allow-read {allowed}/data.txt" in line for line in notes(result))
    quiet = sandbox("--quiet", "--", "busybox", "sh", "-c", script)
    assert notes(quiet) == [] and quiet.stdout == result.stdout
    # Allowed as the note says: the same script reads it, and says nothing of it.
    allowed_run = sandbox("--allow-read", str(secret), "--", "busybox", "sh", "-c", script)
    assert allowed_run.stdout.count(b"secret\n") == 2
    assert not [line for line in notes(allowed_run) if str(secret) in line]


def test_a_shell_is_told_why_a_command_is_not_found():
    result = sandbox("--", BASH, "-c", "ls /; /bin/ls /")
    assert b"ls: command not found" in result.stderr        # what bash itself says
    said = "\n".join(notes(result))
    assert "--allow-exec /usr/bin/ls (to run it)" in said
    assert "execve denied: /usr/bin/ls is outside the exec paths; --allow-exec /usr/bin/ls" \
        in said
    ran = sandbox("--allow-exec", "/usr/bin/ls", "--allow-read", "/", "--", BASH, "-c",
                  "ls / >/dev/null && echo ran")
    assert ran.stdout == b"ran\n", ran.stderr


def test_network_and_identity_denials_name_their_option():
    result = sandbox("--", "busybox", "sh", "-c", "nc -w 1 127.0.0.1 9 </dev/null")
    assert any("--net loopback would allow it" in line for line in notes(result))
    result = sandbox("--no-fast-syscalls", "--", "busybox", "setsid", "true")
    assert any("--allow-syscall setsid" in line for line in notes(result))


@pytest.fixture
def root_only_program(tmp_path_factory):
    """busybox in a directory only root can enter."""
    import shutil

    directory = tmp_path_factory.mktemp("root-only")
    directory.chmod(0o700)
    program = directory / "busybox"
    shutil.copy("/bin/busybox", program)
    return program


def test_the_drop_to_nobody_says_what_to_do(root_only_program):
    if os.geteuid() != 0:
        pytest.skip("only a root start drops privileges")
    result = sandbox("--", str(root_only_program), "echo", "hi")
    assert result.returncode == 126 and result.stdout == b""
    message = result.stderr.decode()
    assert f"{root_only_program}: Permission denied" in message
    assert "nobody" in message and "--user" in message and "--keep-root" in message
    assert "Traceback" not in message
    kept = sandbox("--keep-root", "--", str(root_only_program), "echo", "hi")
    assert kept.returncode == 0 and kept.stdout == b"hi\n"       # positive control
    note = sandbox("--allow-read", str(root_only_program.parent), "--", "busybox", "true")
    assert note.returncode == 0
    assert "user nobody cannot reach it" in note.stderr.decode()


def test_a_write_path_the_dropped_user_cannot_write_is_named():
    # Allowed to write, but root's 0755 directory refuses nobody: Linux's EACCES,
    # which no policy note or audit line would explain.
    if os.geteuid() != 0:
        pytest.skip("only a root start drops privileges")
    import pathlib
    import shutil
    import tempfile

    directory = pathlib.Path(tempfile.mkdtemp(prefix="kvmdune-root-writes-", dir="/tmp"))
    try:
        _check_write_note(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _check_write_note(directory) -> None:
    directory.chmod(0o755)
    script = f"echo x > {directory}/new"
    refused = sandbox("--allow-write", str(directory), "--", "busybox", "sh", "-c", script)
    said = refused.stderr.decode()
    assert f"--allow-write {directory}: user nobody cannot write there" in said, said
    assert "--user" in said and "--keep-root" in said
    directory.chmod(0o777)      # the positive control: nobody can write now, no note
    allowed = sandbox("--allow-write", str(directory), "--", "busybox", "sh", "-c", script)
    assert allowed.returncode == 0, allowed.stderr
    assert "cannot write there" not in allowed.stderr.decode()
    assert (directory / "new").read_text() == "x\n"


def test_a_processs_own_proc_entries_are_named_and_allowed_as_proc_self(tmp_path):
    # Each process of a sandbox has a pid of its own: the note names /proc/self, and
    # a policy naming /proc/self/X allows X of whichever process asks (the gate's
    # verdict; the audit records every denial).
    script = "cat /proc/self/mounts; (cat /proc/self/mounts)"
    result = sandbox("--", "busybox", "sh", "-c", script)
    said = "\n".join(notes(result))
    assert "--allow-read /proc/self/mounts would allow it" in said, said
    audit = tmp_path / "audit.jsonl"
    allowed = sandbox("--allow-read", "/proc/self/mounts", "--audit", str(audit), "--",
                      "busybox", "sh", "-c", script)
    # The file opened is checked too, by its real name /proc/PID/mounts (it was
    # refused there with EACCES): both processes read their mount table.
    native = subprocess.run(["busybox", "sh", "-c", script], capture_output=True)
    assert allowed.returncode == 0 and allowed.stdout == native.stdout, allowed.stderr
    assert native.stdout.count(b" /proc proc ") == 2
    denied = [json.loads(line) for line in audit.read_text().splitlines()]
    assert not [r for r in denied if "mounts" in str(r["args"])], denied
    assert denied, "the audit records denials (busybox's own /etc/busybox.conf)"
