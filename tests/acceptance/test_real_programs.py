"""bash (Debian's bash-static and the machine's dynamic /bin/bash), dynamically
linked coreutils and python3, natively and under ``kvmdune run``; and the clear
refusals of files that cannot be run."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from .conftest import run_dune, run_native

pytestmark = pytest.mark.kvm

BASH_SCRIPT = r"""
set -u
trap 'echo "exit trap ran"' EXIT
square() { local n=$1; echo $(( n * n )); }
arr=(alpha beta gamma)
echo "count=${#arr[@]} second=${arr[1]}"
for x in "${arr[@]}"; do printf '%s:%s\n' "$x" "$(square ${#x})"; done
declare -A map=([k1]=v1 [k2]=v2)
echo "map k2=${map[k2]}"
total=0; for ((i=1;i<=10;i++)); do total=$((total+i)); done; echo "total=$total"
echo "sub: $( (echo inner; echo two) | wc -l )"
ls /etc | sort | head -3 | tr a-z A-Z
words=$(printf 'b\na\nc\n' | sort | paste -sd,); echo "$words"
[[ "abc" == a* ]] && echo "pattern ok"
( exit 4 ); echo "subshell status $?"
"""


def assert_same(native, dune):
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode, dune.stderr.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("bash", ["/bin/bash", "/bin/bash-static"])
def test_bash_script(tmp_path, bash):
    if not os.path.exists(bash):
        pytest.fail(f"{bash} is missing: scripts/setup installs bash-static")
    script = tmp_path / "script.sh"
    script.write_text(BASH_SCRIPT)
    assert_same(run_native([bash, str(script)]), run_dune([bash, str(script)]))


def test_script_run_through_its_shebang(tmp_path):
    script = tmp_path / "hello"
    script.write_text("#!/bin/sh\necho \"args: $*\"\nexit 5\n")
    script.chmod(0o755)
    assert_same(run_native([str(script), "a", "b"]), run_dune([str(script), "a", "b"]))


@pytest.mark.parametrize("argv", [
    ["ls", "-la", "/etc/hostname", "/etc/hosts"],
    ["sort", "-r", "/etc/passwd"],
    ["sha256sum", "/etc/passwd", "/bin/true"],
    ["python3", "-c", "import json, hashlib; print(json.dumps({'squares': sum(i*i for i in "
                      "range(100000)), 'digest': hashlib.sha256(b'kvmdune').hexdigest()}))"],
])
def test_dynamic_programs(argv):
    assert_same(run_native(argv), run_dune(argv))


def test_program_found_on_path():
    dune = run_dune(["true"])
    assert dune.returncode == 0
    assert run_dune(["false"]).returncode == 1    # it ran: 0 is not just the default


@pytest.mark.parametrize("make,status,message", [
    ("text", 127, b"just: not found"),     # execvp hands it to /bin/sh, as `env` does
    ("truncated", 126, b"truncated"),
    ("elf32", 126, b"32-bit"),
    ("directory", 126, b"directory"),
    ("missing", 127, b"not found"),
    ("noexec", 126, b"Permission denied"),
])
def test_files_that_cannot_run(tmp_path, make, status, message):
    target = tmp_path / "prog"
    if make == "text":
        target.write_text("just some text\n")
    elif make == "truncated":
        target.write_bytes(open("/bin/true", "rb").read()[:100])
    elif make == "elf32":
        header = bytearray(open("/bin/true", "rb").read()[:64])
        header[4] = 1   # ELFCLASS32
        target.write_bytes(bytes(header))
    elif make == "directory":
        target.mkdir()
    elif make == "noexec":
        shutil.copy("/bin/true", target)
        target.chmod(0o644)
    if make not in ("missing", "directory", "noexec"):
        target.chmod(0o755)
    name = str(target) if make != "missing" else "kvmdune-no-such-program"
    dune = run_dune([name])
    assert dune.returncode == status, dune.stderr
    assert message.lower() in dune.stderr.lower()
    assert b"Traceback" not in dune.stderr
