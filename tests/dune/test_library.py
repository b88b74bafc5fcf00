"""The Dune API's C side as shipped: the headers agree with the Python mirror of the
ABI, ``kvmdune config`` prints flags that build programs (static and dynamic) and a
pkg-config file that says the same, and dune.h keeps libdune's layout."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from kvmdune.dune import hypercall as abi
from kvmdune.dune import library

from .conftest import config_flags

HEADERS = library.INCLUDE_DIR


def defines(header: str) -> dict[str, int]:
    text = (HEADERS / header).read_text()
    return {name: int(value, 0) for name, value in
            re.findall(r"^#define\s+(KVMDUNE_\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M)}


def test_hypercall_header_matches_python():
    values = defines("kvmdune/hypercall.h")
    assert values["KVMDUNE_HYPERCALL_BASE"] == abi.HYPERCALL_BASE
    assert values["KVMDUNE_HYPERCALL_COUNT"] == abi.HYPERCALL_COUNT
    assert values["KVMDUNE_ABI_VERSION"] == abi.ABI_VERSION
    ops = {name.removeprefix("KVMDUNE_HC_"): value for name, value in values.items()
           if name.startswith("KVMDUNE_HC_")}
    assert ops == {op.name: op.value for op in abi.HypercallOp}
    traps = {name.removeprefix("KVMDUNE_TRAP_"): value for name, value in values.items()
             if name.startswith("KVMDUNE_TRAP_")}
    assert traps == {kind.name: kind.value for kind in abi.TrapKind}


def test_upcall_header_matches_python():
    values = defines("kvmdune/upcall.h")
    for name in ("TF_RAX", "TF_ERR", "TF_RIP", "TF_CS", "TF_RFLAGS", "TF_RSP", "TF_SS",
                 "TF_SIZE", "UPCALL_KIND", "UPCALL_FLAGS", "UPCALL_FS_BASE", "UPCALL_SIZE",
                 "UPCALL_ALIGN", "RED_ZONE", "UPCALL_STACK_RESERVE"):
        assert values[f"KVMDUNE_{name}"] == getattr(abi, name), name
    assert values["KVMDUNE_UPCALL_FROM_USER"] == abi.UpcallFlags.FROM_USER
    # The general registers of struct dune_tf, 8 bytes apart in libdune's order.
    for index, register in enumerate(abi.TF_FIELDS):
        assert values[f"KVMDUNE_TF_{register.upper()}"] == 8 * index, register


LAYOUT_PROGRAM = r"""
#include <stddef.h>
#include <stdio.h>
#include <dune.h>
#define SHOW(type, field) printf(#field " %zu\n", offsetof(type, field))
int main(void)
{
	SHOW(struct dune_tf, rdi); SHOW(struct dune_tf, rcx); SHOW(struct dune_tf, r11);
	SHOW(struct dune_tf, rbx); SHOW(struct dune_tf, r15); SHOW(struct dune_tf, rax);
	SHOW(struct dune_tf, err); SHOW(struct dune_tf, rip); SHOW(struct dune_tf, cs);
	SHOW(struct dune_tf, rflags); SHOW(struct dune_tf, rsp); SHOW(struct dune_tf, ss);
	printf("sizeof %zu\n", sizeof(struct dune_tf));
	printf("signal base %d, CR3_NOFLUSH %#lx, PERM_U %#x, PERM_BIG %#x\n",
	       DUNE_SIGNAL_INTR_BASE, CR3_NOFLUSH, PERM_U, PERM_BIG);
	return 0;
}
"""


def test_dune_h_keeps_libdunes_layout(tmp_path):
    source = tmp_path / "layout.c"
    source.write_text(LAYOUT_PROGRAM)
    binary = tmp_path / "layout"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(binary),
                    str(source), *config_flags()], check=True)
    out = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "rdi 0", "rcx 24", "r11 56", "rbx 64", "r15 104", "rax 112", "err 120", "rip 128",
        "cs 136", "rflags 144", "rsp 152", "ss 160", "sizeof 168",
        "signal base 200, CR3_NOFLUSH 0x8000000000000000, PERM_U 0x8, PERM_BIG 0x100"]


def test_config_flags_and_help():
    assert config_flags() == [f"-I{library.INCLUDE_DIR}", f"-L{library.LIB_DIR}", "-lkvmdune"]
    assert library.ARCHIVE.exists(), "the package build makes the library"
    bare = subprocess.run([sys.executable, "-m", "kvmdune", "config"], capture_output=True,
                          text=True)
    assert bare.returncode == 2 and "--cflags" in bare.stdout and "gcc -static" in bare.stdout


@pytest.mark.skipif(shutil.which("pkg-config") is None, reason="no pkg-config here")
def test_pkg_config_file_says_what_config_says(tmp_path):
    pc = subprocess.run([sys.executable, "-m", "kvmdune", "config", "--pkg-config"],
                        capture_output=True, text=True, check=True).stdout
    (tmp_path / "kvmdune.pc").write_text(pc)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "kvmdune"], capture_output=True,
                           text=True, check=True,
                           env={"PKG_CONFIG_PATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert flags.stdout.split() == config_flags()


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ here")
def test_dune_h_is_usable_from_cplusplus(tmp_path):
    source = tmp_path / "probe.cc"
    source.write_text("#include <dune.h>\nint main() { return kvmdune_probe() == -38 ? 0 : 1; }\n")
    binary = tmp_path / "probe"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-o", str(binary),
                    str(source), *config_flags()], check=True)
    assert subprocess.run([str(binary)]).returncode == 0     # natively: -ENOSYS
