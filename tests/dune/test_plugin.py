"""The plugin sandbox of the Dune lecture (kvmdune/dune/examples/plugin_host.c): an
untrusted image filter, a plugin image of its own, runs at CPL3 in a root where only
its image, its stack and the image buffer are PERM_U, and the host decides each of
its system calls.

- The filter's output, sandboxed, is the same bytes as the same plugin code run
  natively as a plain function, and as the filter computed here in Python.
- Each hostile plugin is contained with the verdict its attack earns (the fault's
  address and kind, the exception, the denied calls, the time budget), and the host
  carries on: the filter runs after it and the host's data is intact.
- All of it under ``kvmdune run`` on both system-call paths and inside
  ``kvmdune sandbox``'s strict profile.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tempfile

import pytest

from .conftest import EXAMPLES, explain, run_dune, run_native

pytestmark = pytest.mark.kvm

HOST = EXAMPLES / "plugin_host.c"
FILTER = EXAMPLES / "plugin_filter.c"
HOSTILE = EXAMPLES / "plugin_hostile.c"
LOG = "plugin-host: "
ADDRESS = re.compile(r"0x[0-9a-f]+")
#: The image plugin_host generates when it is given none (its image_load).
GENERATED_WIDTH, GENERATED_HEIGHT = 64, 48
HOST_DATA_INTACT = "host data intact: secret, stack guards, page-table entries"

#: attack -> the host's log lines about it (addresses as ADDR), the verdict last.
ATTACKS = {
    "read-secret": ["plugin read-secret: killed: page fault at ADDR in the host's secret "
                    "(read, no PERM_U), rip ADDR in its image"],
    "syscalls": [
        "plugin syscalls: denied openat(ADDR, ADDR, 0) -> -EPERM",
        "plugin syscalls: denied write(ADDR, ADDR, ADDR) -> -EPERM",      # to stderr
        "plugin syscalls: denied write(ADDR, ADDR, ADDR) -> -EPERM",      # host memory
        "plugin syscalls: denied write(ADDR, ADDR, ADDR) -> -EPERM",      # past the buffer
        "plugin syscalls: denied write(ADDR, ADDR, ADDR) -> -EPERM",      # length -1
        "plugin syscalls: denied execve(ADDR, ADDR, 0) -> -EPERM",
        "plugin syscalls: exited with status 6; 6 system calls denied",
    ],
    "loop": ["plugin loop: killed: still running after 1 s (SIGALRM)"],
    "stack-below": ["plugin stack-below: killed: page fault at ADDR in host memory below "
                    "its stack (write, no PERM_U), rip ADDR in its image"],
    "stack-above": ["plugin stack-above: killed: page fault at ADDR in host memory above "
                    "its stack (write, no PERM_U), rip ADDR in its image"],
    "return-address": ["plugin return-address: killed: page fault at ADDR in its stack "
                       "(instruction fetch, not executable), rip ADDR in its stack"],
    "host-code": ["plugin host-code: killed: page fault at ADDR in host code "
                  "(instruction fetch, no PERM_U), rip ADDR in host code"],
    "hypercall": [
        "plugin hypercall: denied kvmdune hypercall VM_MPROTECT(ADDR, ADDR, ADDR) -> -EPERM",
        "plugin hypercall: denied kvmdune hypercall LOAD_CR3(0, 0, 0) -> -EPERM",
        "plugin hypercall: denied kvmdune hypercall RET_FROM_USER(0, 0, 0) -> -EPERM",
        "plugin hypercall: killed: page fault at ADDR in the host's secret (read, no "
        "PERM_U), rip ADDR in its image; 3 system calls denied",
    ],
    "page-tables": ["plugin page-tables: killed: page fault at ADDR in its own page-table "
                    "entry (write, no PERM_U), rip ADDR in its image"],
    "privileged": ["plugin privileged: killed: general protection fault (#GP), rip ADDR in "
                   "its image"],
}
#: What the host logs after the attacks: the filter ran again, and its data is intact.
CARRIES_ON = ["plugin invert: exited with status 0", HOST_DATA_INTACT]


@pytest.fixture(scope="module")
def built(dune_build):
    return {"host": dune_build(HOST), "filter": dune_build(FILTER, "plugin"),
            "hostile": dune_build(HOSTILE, "plugin")}


def log_lines(done: subprocess.CompletedProcess) -> list[str]:
    """The host's log, addresses as ADDR (kvmdune's own notes left out)."""
    return [ADDRESS.sub("ADDR", line[len(LOG):])
            for line in done.stderr.decode().splitlines() if line.startswith(LOG)]


def pgm(width: int, height: int, pixels: bytes, comment: bool = True) -> bytes:
    header = f"P5\n{'# a test image' + chr(10) if comment else ''}{width} {height}\n255\n"
    return header.encode() + pixels


def generated_image() -> bytes:
    """plugin_host's own image (image_load without a file)."""
    pixels = bytes((x * 4 + y * 5 + (x * y) % 7 * 20) & 0xFF
                   for y in range(GENERATED_HEIGHT) for x in range(GENERATED_WIDTH))
    return pgm(GENERATED_WIDTH, GENERATED_HEIGHT, pixels, comment=False)


def inverted(image: bytes, width: int, height: int) -> bytes:
    start = len(image) - width * height
    return image[:start] + bytes(255 - p for p in image[start:])


def blurred(image: bytes, width: int, height: int) -> bytes:
    """The 3x3 box mean, edges repeated, rounded: what plugin_filter's blur computes."""
    start = len(image) - width * height
    pixels = image[start:]

    def at(y: int, x: int) -> int:
        return pixels[min(max(y, 0), height - 1) * width + min(max(x, 0), width - 1)]

    out = bytes((sum(at(y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) + 4) // 9
                for y in range(height) for x in range(width))
    return image[:start] + out


EXPECTED = {"invert": inverted, "blur": blurred}


@pytest.fixture
def image_file(tmp_path):
    width, height = 37, 23
    pixels = random.Random(11).randbytes(width * height)
    path = tmp_path / "image.pgm"
    path.write_bytes(pgm(width, height, pixels))
    return path, width, height


@pytest.mark.parametrize("filter_name", EXPECTED)
def test_filter_in_the_sandbox_equals_the_native_run(built, image_file, syscall_path,
                                                       filter_name):
    path, width, height = image_file
    argv = [built["filter"], filter_name, str(path)]
    native = run_native([built["host"], "native", *argv])
    sandboxed = run_dune([built["host"], "run", *argv])
    assert native.returncode == 0, explain(native)
    assert sandboxed.returncode == 0, explain(sandboxed)
    expected = EXPECTED[filter_name](path.read_bytes(), width, height)
    assert native.stdout == expected
    assert sandboxed.stdout == expected
    assert log_lines(sandboxed) == [f"plugin {filter_name}: exited with status 0"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_hostile_plugin_is_contained_and_the_host_carries_on(built, attack):
    done = run_dune([built["host"], "hostile", built["hostile"], built["filter"], attack])
    assert done.returncode == 0, explain(done)
    assert log_lines(done) == [*ATTACKS[attack], *CARRIES_ON], explain(done)
    image = generated_image()
    assert done.stdout == inverted(image, GENERATED_WIDTH, GENERATED_HEIGHT), \
        "only the filter's output reached stdout"


def verdict_addresses(done: subprocess.CompletedProcess, attack: str) -> list[int]:
    """The addresses of an attack's verdict line (fault address, rip)."""
    for line in done.stderr.decode().splitlines():
        if line.startswith(f"{LOG}plugin {attack}: killed"):
            return [int(found, 16) for found in ADDRESS.findall(line)]
    raise AssertionError(f"no verdict for {attack}: {explain(done)}")


def test_every_attack_in_one_host(built, syscall_path):
    """One host meets them all in turn, each in a root of its own, and carries on."""
    done = run_dune([built["host"], "hostile", built["hostile"], built["filter"]])
    assert done.returncode == 0, explain(done)
    assert log_lines(done) == [*(line for lines in ATTACKS.values() for line in lines),
                               *CARRIES_ON], explain(done)
    assert done.stdout == inverted(generated_image(), GENERATED_WIDTH, GENERATED_HEIGHT)
    # A jump is caught where it lands: the fault is at the target, rip == address.
    for attack in ("return-address", "host-code"):
        address, rip = verdict_addresses(done, attack)
        assert address == rip
    # Reading the secret directly and after the hypercalls fails at the same address.
    assert verdict_addresses(done, "read-secret")[0] == verdict_addresses(done, "hypercall")[0]


def test_plugin_sandbox_inside_kvmdune_sandbox(built, image_file):
    """The strict profile, allowed to read the directory of the host, its plugins and
    the image, nothing more."""
    image, width, height = image_file
    # The sandbox drops to nobody: everything goes where nobody can read it.
    with tempfile.TemporaryDirectory(prefix="kvmdune-plugin-") as directory:
        os.chmod(directory, 0o755)
        host, plugin, hostile, path = (shutil.copy(source, directory) for source in (
            built["host"], built["filter"], built["hostile"], image))
        options = ["--allow-read", directory]
        filtered = run_dune([host, "run", plugin, "blur", path], *options, sandbox=True)
        assert filtered.returncode == 0, explain(filtered)
        assert filtered.stdout == blurred(image.read_bytes(), width, height)
        attacked = run_dune([host, "hostile", hostile, plugin], *options, sandbox=True)
    assert attacked.returncode == 0, explain(attacked)
    assert log_lines(attacked) == [*(line for lines in ATTACKS.values() for line in lines),
                                   *CARRIES_ON], explain(attacked)
    assert attacked.stdout == inverted(generated_image(), GENERATED_WIDTH, GENERATED_HEIGHT)


def test_the_host_refuses_an_image_that_is_not_position_independent(built, tmp_path):
    fixed = tmp_path / "fixed.plugin"
    subprocess.run(["gcc", "-O2", "-static", "-nostdlib", "-ffreestanding",
                    "-fno-stack-protector", "-Wl,-e,plugin_main", "-o", str(fixed), str(FILTER)],
                   check=True)
    done = run_dune([built["host"], "run", str(fixed), "invert"])
    assert done.returncode == 1, explain(done)
    assert f"{fixed}: not a plugin: not position-independent" in done.stderr.decode()
    assert done.stdout == b""
