"""``kvmdune run --trace``: strace-format lines, following children."""

from __future__ import annotations

import re

import pytest

from .conftest import run_dune, run_native

pytestmark = pytest.mark.kvm


def test_trace_lines_look_like_strace(tmp_path, compiled):
    out = tmp_path / "trace.txt"
    dune = run_dune([compiled[("hello", "dynamic")], "x"], f"--trace={out}")
    assert dune.returncode == 0
    lines = out.read_text().splitlines()
    assert any(re.fullmatch(r'openat\(AT_FDCWD, "[^"]*libc\.so\.6", O_RDONLY\|O_CLOEXEC\) += 3 <\d+\.\d{6}>', l)
               for l in lines), lines[:20]
    # strace's default string limit (-s 32), and the length written
    assert any(l.startswith('write(1, "hello from a guest with 2 argume"..., 58)') for l in lines), lines
    assert any(re.match(r"read\(3, \"\\177ELF", l) for l in lines)   # output buffers shown
    assert lines[-1].startswith("exit_group(0)") and lines[-1].endswith("= ?")


def test_trace_follows_children(tmp_path):
    out = tmp_path / "trace.txt"
    dune = run_dune(["busybox", "sh", "-c", "busybox true; echo done"], f"--trace={out}")
    assert dune.returncode == 0 and dune.stdout == b"done\n"
    text = out.read_text()
    assert re.search(r"^\[pid \d+\] execve\(\"/", text, re.M), text[:2000]
    assert re.search(r"^wait4\(", text, re.M)


def test_unknown_system_call_gets_enosys_and_a_trace_line(tmp_path):
    source = tmp_path / "nosys.c"
    source.write_text("#include <unistd.h>\n#include <stdio.h>\n#include <errno.h>\n"
                      "int main(void){ long r = syscall(1000, 1, 2); "
                      "printf(\"%ld %d\\n\", r, errno); return 0; }\n")
    import subprocess
    subprocess.run(["gcc", "-static", "-o", str(tmp_path / "nosys"), str(source)], check=True)
    binary = str(tmp_path / "nosys")
    assert run_native([binary]).stdout == b"-1 38\n"        # what Linux answers
    dune = run_dune([binary])
    assert dune.stdout == b"-1 38\n"
    assert re.search(rb"system call .*1000.*: ENOSYS", dune.stderr), dune.stderr   # the note
    # The trace line needs --trace (without it there is none to check).
    trace = tmp_path / "trace.txt"
    traced = run_dune([binary], f"--trace={trace}")
    assert traced.stdout == b"-1 38\n"
    assert re.search(r"^syscall_0x3e8\(0x1, 0x2, [^)]*\) += -1 ENOSYS "
                     r"\(Function not implemented\)$", trace.read_text(), re.M), \
        trace.read_text()[-2000:]
