"""Which system calls kvmdune serves, and how (the handler modules register
themselves when ``kvmdune.linux`` is imported): emulated by a handler, forwarded to
Linux by the table-driven forwarder, or refused with ENOSYS; and which of them the
native fast path may serve without an exit (``fastpath.plan``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .dispatch import HANDLERS
from .process import SHARED_IDENTITY
from .syscall_table import SYSCALLS, ArgKind, Dep, SyscallSpec


class Support(str, enum.Enum):
    EMULATED = "emulated"    # a handler in kvmdune.linux.sys_*
    FORWARDED = "forwarded"  # run by Linux, every pointer copied through checked buffers
    PARTIAL = "partial"      # forwarded for the commands whose pointers the table describes
    REFUSED = "refused"      # ENOSYS: it would act on the VMM, or is not supported yet


#: Argument kinds the forwarder cannot copy (it refuses such calls when non-NULL).
UNFORWARDABLE = {ArgKind.PTR, ArgKind.ADDR, ArgKind.OPAQUE, ArgKind.MSGHDR,
                 ArgKind.STRING_ARRAY}


@dataclass(frozen=True)
class CallSupport:
    number: int
    name: str
    support: Support
    family: str
    fast: bool = False      # the native fast path may serve it (kvmdune run)


def _kinds(slot) -> tuple[set, bool]:
    """The argument kinds a slot can take, and whether it depends on another argument."""
    if isinstance(slot, Dep):
        choices = [choice for _, choice in slot.cases] + [slot.default]
        return {choice.kind for choice in choices if choice is not None}, True
    return {slot.kind}, False


def _holds_pointers(slot) -> bool:
    choices = ([c for _, c in slot.cases] + [slot.default]) if isinstance(slot, Dep) else [slot]
    return any(c is not None and c.struct is not None and c.struct.has_pointers
               and c.kind in (ArgKind.IN_BUF, ArgKind.OUT_BUF, ArgKind.INOUT_BUF)
               for c in choices)


def support_of(spec: SyscallSpec) -> Support:
    if spec.name in HANDLERS:
        return Support.EMULATED
    if spec.vmm_sensitive and spec.name not in SHARED_IDENTITY:
        return Support.REFUSED
    support = Support.FORWARDED
    for slot in spec.args:
        kinds, dependent = _kinds(slot)
        if _holds_pointers(slot):
            kinds = kinds | {ArgKind.OPAQUE}
        if kinds & UNFORWARDABLE:
            if not dependent:
                return Support.REFUSED
            support = Support.PARTIAL
    return support


def fast_numbers() -> set[int]:
    """The calls the fast path may serve natively under ``kvmdune run`` (none when the
    native module is not built)."""
    from .fastpath import native_module, plan

    native = native_module()
    return set() if native is None else set(plan(native, None))


def support_table() -> list[CallSupport]:
    fast = fast_numbers()
    return [CallSupport(spec.number, spec.name, support_of(spec), spec.family.value,
                        spec.number in fast)
            for spec in sorted(SYSCALLS.values(), key=lambda s: s.number)]
