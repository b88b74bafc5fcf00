"""The dispatcher: one system call from the guest's registers to its result.

It reads ``routing.ROUTES`` only. Arguments are decoded by their declared kinds
(C ``int`` and descriptors as the kernel reads them: the low 32 bits, sign-extended;
pointers and ``long``\\s as 64-bit values) before any handler sees them, and every
way a call can fail on the guest's input is turned into its errno here, in one
place: a guest pointer that faults is EFAULT, a call whose pointers the table
cannot describe is ENOSYS, a host call that failed is its errno. Anything else is
a bug in the VMM: the guest is ended (fail closed) and the user told in one line
(``internal_error``).
"""

from __future__ import annotations

import operator
from typing import Callable, Mapping

from ..memory import GuestFault
from .abi import Errno
from .forward import NotForwardable, forward
from .internal_error import InternalError
from . import profiling
from .routing import ROUTES, Route, Support
from .syscall_table import Dep, SyscallSpec, register_reader, resolve_args
from .uaccess import Fault



def decode(route: Route, raw: tuple[int, ...]) -> tuple[int, ...]:
    """The six argument registers as the kernel reads them for this call."""
    readers = _readers(route)
    if readers is not None:
        return tuple(map(operator.call, readers, raw))
    decoded = list(raw)
    for index, arg in enumerate(resolve_args(route.spec, raw)):
        if arg is not None:
            decoded[index] = register_reader(arg)(raw[index])
    return tuple(decoded)


def _keep(raw: int) -> int:
    return raw


#: Per call number, its declaration and how ``decode`` reads each register
#: (``register_reader``; past the call's arguments the register as it is), for
#: calls whose arguments' declarations depend on no register (no ``Dep``): None
#: for the others.
_READERS: dict[int, tuple[SyscallSpec, tuple[Callable[[int], int], ...] | None]] = {}
_REGISTERS = 6


def _readers(route: Route) -> tuple[Callable[[int], int], ...] | None:
    spec = route.spec
    known = _READERS.get(spec.number)
    if known is not None and known[0] is spec:
        return known[1]
    readers = None
    if not any(isinstance(slot, Dep) for slot in spec.args):
        readers = tuple(register_reader(spec.args[index]) if index < len(spec.args)
                        and spec.args[index] is not None else _keep
                        for index in range(_REGISTERS))
    _READERS[spec.number] = (spec, readers)
    return readers


class Dispatcher:
    """Serves system calls by the table; reports refusals once per call."""

    def __init__(self, log: Callable[[str], None],
                 routes: Mapping[int, Route] = ROUTES) -> None:
        self.log = log
        self.routes = routes
        self._told: set[str] = set()

    def serve(self, proc, cpu, number: int, raw: tuple[int, ...], quiet: bool = False):
        """The call's result (-errno on failure), None when the handler set the
        registers itself, or a Stop. Raises ``InternalError`` on a VMM bug."""
        if not profiling.timing():
            return self._serve(proc, cpu, number, raw, quiet)
        route = self.routes.get(number)
        with profiling.phase(f"call.{route.name if route else number}"):
            return self._serve(proc, cpu, number, raw, quiet)

    def _serve(self, proc, cpu, number: int, raw: tuple[int, ...], quiet: bool):
        route = self.routes.get(number)
        if route is None or route.support is Support.REFUSED:
            if not quiet:
                self._tell_refused(route, number)
            return -Errno.ENOSYS
        args = decode(route, raw)
        try:
            if route.handler is None:
                return forward(proc, route.spec, args)
            return route.handler(proc, cpu, *args)
        except Fault as exc:
            return -exc.errno
        except GuestFault:
            return -Errno.EFAULT
        except NotForwardable as exc:
            if not quiet:
                self._tell_once(route.name, f"kvmdune: {exc}: not supported, ENOSYS")
            return -Errno.ENOSYS
        except OSError as exc:       # a host call made by a handler failed
            return -(exc.errno or Errno.EIO)
        except Exception as exc:     # a bug in the VMM: fail closed
            raise InternalError(route.name, exc) from exc

    def _tell_refused(self, route: Route | None, number: int) -> None:
        if route is None:
            self._tell_once(str(number), f"kvmdune: unknown system call {number}: ENOSYS")
        else:
            self._tell_once(route.name, f"kvmdune: {route.name} ({number}) refused with "
                                        f"ENOSYS: {route.reason}")

    def _tell_once(self, key: str, text: str) -> None:
        if key not in self._told:
            self._told.add(key)
            self.log(text)
