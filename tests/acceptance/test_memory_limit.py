"""The guest memory limit (``kvmdune run --memory``): a program allocating past it is
stopped at the limit, as documented: killed (status 137) with one line naming the
limit when the memory it touches runs out, or ENOMEM from mmap/brk (malloc returns
NULL) when a mapping made at once does not fit. Either way, it got right up to the
limit first (enforced frame by frame, not by a margin)."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import run_dune

pytestmark = pytest.mark.kvm

#: Touches memory in chunks of argv[1] MiB until stopped, writing the MiBs touched
#: so far after each one; exits 3 when malloc fails.
HOG = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t chunk = strtoul(argv[1], 0, 10) << 20, touched = 0;
    for (;;) {
        char *block = malloc(chunk);
        if (!block) return 3;
        for (size_t offset = 0; offset < chunk; offset += 4096) {
            block[offset] = 1;
            touched += 4096;
            if (touched % (1 << 20) == 0) {
                char line[32];
                int length = snprintf(line, sizeof line, "%zu\n", touched >> 20);
                if (write(1, line, length) != length) return 4;
            }
        }
    }
}
"""
LIMIT_MIB = 64
#: What the program's own image, stack, heap and the page tables may take of the
#: limit before its chunks: it must get at least this close.
OVERHEAD_MIB = 6
KILLED = 128 + 9


@pytest.fixture(scope="module")
def hog(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("limit")
    (directory / "hog.c").write_text(HOG)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(directory / "hog"),
                    str(directory / "hog.c")], check=True)
    return str(directory / "hog")


def touched_mib(result: subprocess.CompletedProcess) -> int:
    reports = result.stdout.split()
    return int(reports[-1]) if reports else 0


def test_touching_past_the_limit_is_killed_at_it(hog):
    # 128 MiB chunks are mapped on first touch: the touch that needs a frame past
    # the limit ends the process.
    result = run_dune([hog, "128"], "--memory", f"{LIMIT_MIB}M")
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == KILLED, stderr
    assert f"guest memory limit of {LIMIT_MIB} MiB reached: killed (status 137)" in stderr
    assert LIMIT_MIB - OVERHEAD_MIB <= touched_mib(result) < LIMIT_MIB, result.stdout[-200:]


def test_mapping_past_the_limit_fails_with_enomem(hog):
    # 1 MiB chunks are mapped whole at mmap: the mmap that does not fit fails, and
    # the program sees malloc return NULL (its exit status 3).
    result = run_dune([hog, "1"], "--memory", f"{LIMIT_MIB}M")
    assert result.returncode == 3, result.stderr.decode(errors="replace")
    assert LIMIT_MIB - OVERHEAD_MIB <= touched_mib(result) < LIMIT_MIB, result.stdout[-200:]
