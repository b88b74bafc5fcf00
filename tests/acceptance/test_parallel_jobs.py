"""Parallel jobs as build tools and shells run them, natively and under ``kvmdune
run``: GNU make -j (a jobserver pipe, SIGCHLD blocked and let through only inside
pselect; a recursive make sharing the jobserver) and background jobs a shell
waits for. A regression that loses a child's SIGCHLD hangs: every run has a
timeout, so it fails instead."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from .conftest import run_dune, run_native

pytestmark = pytest.mark.kvm

#: Seconds a guest build may take (a few seconds here, more on a busy machine).
BUILD_TIMEOUT = 180
UNITS = 8

MAKEFILE = """\
OBJS := $(patsubst %.c,%.o,$(sort $(wildcard *.c)))
prog: $(OBJS) lib/liblib.a
\tcc -o $@ $(OBJS) lib/liblib.a
lib/liblib.a:
\t$(MAKE) -C lib
%.o: %.c
\tcc -c -o $@ $<
"""
LIB_MAKEFILE = """\
liblib.a: one.o two.o
\tar rcs $@ one.o two.o
%.o: %.c
\tcc -c -o $@ $<
"""


def write_project(directory: pathlib.Path) -> None:
    """UNITS translation units, a main that adds up what each returns, and a library
    built by a recursive make (which joins the parent's jobserver)."""
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "lib").mkdir(parents=True)
    for unit in range(UNITS):
        (directory / f"unit{unit}.c").write_text(f"int unit{unit}(int x) {{ return x * {unit + 1}; }}\n")
    declarations = "".join(f"int unit{unit}(int);\n" for unit in range(UNITS))
    total = " + ".join(f"unit{unit}(argc)" for unit in range(UNITS))
    (directory / "main.c").write_text(
        "#include <stdio.h>\n" + declarations + "int one(void); int two(void);\n"
        f"int main(int argc, char **argv) {{ printf(\"%d\\n\", {total} + one() + two()); "
        "return 3; }\n")
    (directory / "lib" / "one.c").write_text("int one(void) { return 100; }\n")
    (directory / "lib" / "two.c").write_text("int two(void) { return 200; }\n")
    (directory / "Makefile").write_text(MAKEFILE)
    (directory / "lib" / "Makefile").write_text(LIB_MAKEFILE)


def built(directory: pathlib.Path) -> tuple[bytes, int]:
    result = run_native([str(directory / "prog")])
    return result.stdout, result.returncode


@pytest.mark.parametrize("jobs", [2, 4])
def test_make_parallel_build_matches_native(tmp_path, jobs):
    for tool in ("make", "cc", "ar"):
        if shutil.which(tool) is None:
            pytest.skip(f"not installed: {tool}")
    argv = ["make", "--no-print-directory", f"-j{jobs}"]
    native_dir, dune_dir = tmp_path / "native", tmp_path / "dune"
    write_project(native_dir)
    write_project(dune_dir)
    native = run_native(argv, cwd=native_dir)
    dune = run_dune(argv, cwd=dune_dir, timeout=BUILD_TIMEOUT)
    assert dune.returncode == native.returncode == 0, dune.stderr.decode(errors="replace")
    # The order in which make starts its jobs is fixed; when they end is not.
    assert sorted(dune.stdout.splitlines()) == sorted(native.stdout.splitlines())
    assert built(dune_dir) == built(native_dir) == (b"336\n", 3)


BACKGROUND_JOBS = r"""
for i in 1 2 3 4; do (sleep 0.$i; echo "job $i" > job$i) & done
seq 1 500 | sort -rn | head -n 2 > top &
wait
echo "all waited: $?"; cat job1 job2 job3 job4 top
(sleep 0.1; exit 3) & wait $!; echo "status of the last: $?"
trap 'echo "trapped child"' CHLD
(exit 0) & wait
"""


def test_shell_background_jobs_and_wait_match_native(tmp_path):
    script = tmp_path / "jobs.sh"
    script.write_text(BACKGROUND_JOBS)
    native = run_native(["bash", str(script)], cwd=tmp_path)
    dune = run_dune(["bash", str(script)], cwd=tmp_path, timeout=BUILD_TIMEOUT)
    assert dune.returncode == native.returncode == 0, dune.stderr.decode(errors="replace")
    assert dune.stdout == native.stdout
