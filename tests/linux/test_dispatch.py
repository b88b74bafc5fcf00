"""The dispatch table and the dispatcher: every call has one route, arguments are
decoded by their declared kinds, and every failure on guest input becomes an errno
in one place while a VMM bug becomes an InternalError (never a half-served call)."""

from __future__ import annotations

import re
from types import MappingProxyType

import pytest

from kvmdune.linux import internal_error
from kvmdune.linux.abi import Errno
from kvmdune.linux.dispatch import Dispatcher, decode
from kvmdune.linux.forward import NotForwardable
from kvmdune.linux.internal_error import InternalError
from kvmdune.linux.routing import EMULATED, ROUTES, Route, Support
from kvmdune.linux.syscall_table import (BY_NAME, INTEGER_KINDS, SYSCALLS, Sysno, int_value,
                                         resolve_args)
from kvmdune.linux.uaccess import Fault
from kvmdune.memory import FaultKind, GuestFault


def test_every_call_has_exactly_one_route():
    assert set(ROUTES) == set(SYSCALLS)
    for number, route in ROUTES.items():
        assert route.spec is SYSCALLS[number]
        assert (route.handler is not None) == (route.support is Support.EMULATED), route.name


def test_partial_and_refused_calls_say_why():
    for route in ROUTES.values():
        if route.support in (Support.PARTIAL, Support.REFUSED):
            assert route.reason, route.name
        else:
            assert not route.reason, route.name


def test_emulated_handlers_document_what_they_implement():
    for name, handler in EMULATED.items():
        assert handler.__doc__, name


def test_calls_that_used_to_be_refused_are_served():
    for name in ("rt_sigtimedwait", "get_mempolicy", "mincore"):
        assert ROUTES[BY_NAME[name].number].support is Support.EMULATED


def test_sysno_names_the_numbers():
    assert Sysno.kill == 62 and Sysno.prctl == 157 and Sysno.rt_sigtimedwait == 128


def test_arguments_are_decoded_by_kind():
    close = ROUTES[Sysno.close]
    # A descriptor is the low 32 bits, sign-extended: garbage above is ignored.
    assert decode(close, (0xDEAD_BEEF_0000_0003, 0, 0, 0, 0, 0))[0] == 3
    assert decode(close, (0xFFFF_FFFF, 0, 0, 0, 0, 0))[0] == -1
    read = ROUTES[Sysno.read]
    decoded = decode(read, (0xFFFF_FFFF_FFFF_FFFF, 0x7000_0000_1000, 1 << 40, 0, 0, 0))
    assert decoded[0] == -1                      # fd
    assert decoded[1] == 0x7000_0000_1000        # a pointer stays 64-bit and unsigned
    assert decoded[2] == 1 << 40                 # size_t is wide


#: Register values that tell every reading of a register apart: sign bits of both
#: widths, garbage above the low half, all ones.
_PROBE_REGISTERS = (0, 5, 1 << 31, 1 << 63, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF,
                    0xDEAD_BEEF_8000_0003, 0x7000_0000_1000)


def _decoded_by_declaration(spec, raw):
    """What ``decode`` gives, from each argument's declaration (``int_value``)."""
    decoded = list(raw)
    for index, arg in enumerate(resolve_args(spec, raw)):
        if arg is not None:
            decoded[index] = (int_value(arg, raw[index]) if arg.kind in INTEGER_KINDS
                              else raw[index] & 0xFFFF_FFFF_FFFF_FFFF)
    return tuple(decoded)


def test_every_call_is_decoded_as_its_declaration_says():
    # decode reads a call's registers with readers chosen once per call number.
    for route in ROUTES.values():
        for probe in _PROBE_REGISTERS:
            raw = tuple((probe + shift) & 0xFFFF_FFFF_FFFF_FFFF for shift in range(6))
            assert decode(route, raw) == _decoded_by_declaration(route.spec, raw), \
                (route.spec.name, hex(probe))


def _dispatcher_with(handler, name="getppid"):
    spec = BY_NAME[name]
    routes = MappingProxyType({spec.number: Route(spec, Support.EMULATED, handler)})
    told: list[str] = []
    return Dispatcher(told.append, routes), spec.number, told


@pytest.mark.parametrize("raised, errno", [
    (GuestFault(8, FaultKind.NOT_MAPPED), Errno.EFAULT),
    (GuestFault(0xFFFF_8000_0000_0000, FaultKind.NOT_USER), Errno.EFAULT),
    (Fault(Errno.ENAMETOOLONG), Errno.ENAMETOOLONG),
    (NotForwardable("x: argument y"), Errno.ENOSYS),
    (PermissionError(Errno.EPERM, "no"), Errno.EPERM),
])
def test_guest_input_errors_become_errnos_in_one_place(raised, errno):
    def handler(proc, cpu, *args):
        raise raised
    dispatcher, number, _ = _dispatcher_with(handler)
    assert dispatcher.serve(None, None, number, (0,) * 6) == -errno


def test_a_handler_result_passes_through():
    dispatcher, number, _ = _dispatcher_with(lambda proc, cpu, *args: 42)
    assert dispatcher.serve(None, None, number, (0,) * 6) == 42


def test_a_vmm_bug_is_an_internal_error_not_an_errno():
    def handler(proc, cpu, *args):
        raise KeyError("a bug")
    dispatcher, number, _ = _dispatcher_with(handler)
    with pytest.raises(InternalError) as caught:
        dispatcher.serve(None, None, number, (0,) * 6)
    assert caught.value.where == "getppid" and isinstance(caught.value.cause, KeyError)


def test_refusals_are_told_once_with_their_reason():
    told: list[str] = []
    dispatcher = Dispatcher(told.append)
    for _ in range(3):
        assert dispatcher.serve(None, None, Sysno.ptrace, (0,) * 6) == -Errno.ENOSYS
        assert dispatcher.serve(None, None, 999, (0,) * 6) == -Errno.ENOSYS
    assert len(told) == 2
    assert "ptrace" in told[0] and "VMM" in told[0]
    assert "999" in told[1]


def test_an_internal_error_is_one_line_with_the_details_in_a_file(monkeypatch, tmp_path):
    monkeypatch.delenv(internal_error.DEBUG_VARIABLE, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    lines: list[str] = []
    try:
        raise ValueError("broken invariant")
    except ValueError as exc:
        internal_error.report(lines.append, "openat", InternalError("openat", exc))
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "internal error in openat: ValueError: broken invariant" in lines[0]
    path = re.search(r"details in (\S+);", lines[0]).group(1)
    assert path.startswith(str(tmp_path))
    assert "Traceback" in open(path).read()


def test_debug_prints_the_details(monkeypatch):
    monkeypatch.setenv(internal_error.DEBUG_VARIABLE, "1")
    lines: list[str] = []
    try:
        raise ValueError("broken invariant")
    except ValueError as exc:
        internal_error.report(lines.append, "openat", exc)
    assert "Traceback" in lines[0] and "please report" in lines[-1]
