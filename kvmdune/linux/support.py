"""The support report (``kvmdune syscalls``): each call's route from the dispatch
table, and whether the native fast path may serve it without an exit."""

from __future__ import annotations

from dataclasses import dataclass

from .fastpath import native_module, plan
from .routing import ROUTES, Support

__all__ = ["CallSupport", "Support", "fast_numbers", "support_table"]


@dataclass(frozen=True)
class CallSupport:
    number: int
    name: str
    support: Support
    family: str
    fast: bool = False      # the native fast path may serve it (kvmdune run)
    reason: str = ""        # why it is partial or refused


def fast_numbers() -> set[int]:
    """The calls the fast path may serve natively under ``kvmdune run`` (none when the
    native module is not built)."""
    native = native_module()
    return set() if native is None else set(plan(native, None))


def support_table() -> list[CallSupport]:
    fast = fast_numbers()
    return [CallSupport(route.number, route.name, route.support, route.spec.family.value,
                        route.number in fast, route.reason)
            for route in ROUTES.values()]
