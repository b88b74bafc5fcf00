"""Who a guest is, seen from inside and from outside: how its first program starts
(execvp's /bin/sh fallback), its name (/proc/self/comm, and the VMM process's comm
and command line that ps, pgrep and killall read), the /proc entries that describe
it, and a fork that cannot make its child."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from .conftest import run_dune, run_native, vmm_env

BUSYBOX = shutil.which("busybox")
#: This checkout's kvmdune, for VMMs started in another directory.
CHECKOUT_ENV = {**os.environ,
                "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}

pytestmark = pytest.mark.kvm


def _script(directory: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)
    return path


# -- execvp's fallback: a script without #! -------------------------------------------

NO_SHEBANG = 'echo "$0 got $# arguments: $*"\nexit 3\n'


def test_script_without_shebang_runs_through_sh_as_execvp_does(tmp_path):
    _script(tmp_path, "plain", NO_SHEBANG)
    native = run_native(["env", "./plain", "a", "b c"], cwd=tmp_path)
    dune = run_dune(["./plain", "a", "b c"], cwd=tmp_path, env=CHECKOUT_ENV)
    assert native.returncode == 3 and native.stdout == b"./plain got 2 arguments: a b c\n"
    assert (dune.returncode, dune.stdout, dune.stderr) == (3, native.stdout, b"")


def test_script_without_shebang_found_on_path(tmp_path):
    _script(tmp_path, "plain-on-path", NO_SHEBANG)
    env = {**CHECKOUT_ENV, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    native = run_native(["env", "plain-on-path", "x"], env=env)
    dune = run_dune(["plain-on-path", "x"], env=env)
    assert native.stdout == f"{tmp_path}/plain-on-path got 1 arguments: x\n".encode()
    assert (dune.returncode, dune.stdout) == (native.returncode, native.stdout)


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_guest_execve_of_script_without_shebang_is_enoexec(tmp_path, compiled, link):
    """Only the first program gets execvp's fallback: the guest's own execve gets
    the kernel's ENOEXEC. Positive control: a script with #! is executed."""
    _script(tmp_path, "plain", NO_SHEBANG)
    _script(tmp_path, "with-line", "#!/bin/sh\n" + NO_SHEBANG)
    for name, expected in (("./plain", b"execve ./plain: Exec format error\n"),
                           ("./with-line", b"./with-line got 0 arguments: \n")):
        argv = [compiled[("identity", link)], "exec", name]
        native = run_native(argv, cwd=tmp_path)
        dune = run_dune(argv, cwd=tmp_path, env=CHECKOUT_ENV)
        assert native.stdout == expected
        assert (dune.returncode, dune.stdout) == (native.returncode, native.stdout)


def test_unrunnable_elf_is_not_handed_to_sh(tmp_path):
    """A 32-bit ELF: kvmdune says why it cannot run it (sh would print garbage)."""
    binary = tmp_path / "elf32"
    binary.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(200))
    binary.chmod(0o755)
    dune = run_dune([str(binary)])
    assert dune.returncode == 126 and b"32-bit ELF" in dune.stderr
