"""Instruction decoding with capstone: lengths (to skip a faulting instruction) and
listings (for crash reports)."""

from __future__ import annotations

import functools

MAX_INSTRUCTION_LENGTH = 15


@functools.lru_cache(maxsize=1)
def _decoder():
    """capstone, imported on first use: only crash reports and SKIP need it, and it
    costs tens of milliseconds of start-up."""
    import capstone

    return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def instruction_length(code: bytes, address: int) -> int | None:
    """Length of the first instruction in ``code``; None if it does not decode."""
    for insn in _decoder().disasm(code[:MAX_INSTRUCTION_LENGTH], address, 1):
        return insn.size
    return None


def disassemble(code: bytes, address: int, count: int = 8) -> list[str]:
    """Up to ``count`` instructions as ``address: bytes  mnemonic operands`` lines."""
    lines = []
    for insn in _decoder().disasm(code, address, count):
        lines.append(f"{insn.address:#018x}: {insn.bytes.hex(' '):<30} "
                     f"{insn.mnemonic} {insn.op_str}".rstrip())
    return lines
