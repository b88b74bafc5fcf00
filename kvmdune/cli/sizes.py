"""Sizes on the command line: 4096, 64K, 512M, 4G."""

from __future__ import annotations

import argparse

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    number = value[:-1] if unit else value
    try:
        size = int(float(number) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 4096, 64K, 512M, 4G)")
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return size


def parse_guest_memory(text: str) -> int:
    """A ``--memory`` size: whole 2 MiB pages, no more than one KVM memory slot holds."""
    from ..memory.guest_memory import GUEST_MEMORY_ALIGN, MAX_GUEST_MEMORY

    size = parse_size(text)
    if size % GUEST_MEMORY_ALIGN:
        up = -(-size // GUEST_MEMORY_ALIGN) * GUEST_MEMORY_ALIGN
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of 2M pages (use e.g. {up >> 20}M)")
    if size > MAX_GUEST_MEMORY:
        raise argparse.ArgumentTypeError(
            f"{text!r} is more than KVM maps in one memory slot "
            f"(at most {MAX_GUEST_MEMORY >> 20}M)")
    return size


def positive_int(text: str) -> int:
    """A count on the command line: 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value
