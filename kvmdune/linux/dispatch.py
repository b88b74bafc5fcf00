"""The registry of system-call handlers: ``@handles("name")`` puts a function in it.

Every handler has one signature: ``handler(proc, cpu, a0, a1, a2, a3, a4, a5)``
with the six raw argument registers, and returns the value for RAX (a result or
-errno), None when it has set the registers itself (execve, rt_sigreturn), or a
``Stop`` that ends the process.
"""

from __future__ import annotations

from typing import Callable

HANDLERS: dict[str, Callable] = {}


def handles(*names: str) -> Callable[[Callable], Callable]:
    def register(function: Callable) -> Callable:
        for name in names:
            if name in HANDLERS:
                raise RuntimeError(f"two handlers for {name}")
            HANDLERS[name] = function
        return function
    return register
