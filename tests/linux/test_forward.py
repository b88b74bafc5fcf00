"""The forwarder's copy-in and copy-out (kvmdune/linux/forward.py), on real guest
memory and real host system calls: no VM runs, nothing is mocked.

Guest memory is a real ``GuestMemory`` with a real ``AddressSpace`` over it (the
page tables the guest would run on); descriptors are a real ``FdTable`` over host
pipes, sockets and files. For every argument kind: the data crosses exactly as
Linux would move it (in, out, both ways, through iovecs, socket addresses and
their lengths, out buffers sized by the result in the result's unit), and a
pointer to unmapped, read-only (where the kernel writes), kernel-half,
non-canonical or straddling memory is EFAULT before the host acts, each beside a
positive control that the same call with a good pointer works.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

import pytest

from kvmdune.linux.fdtable import FdTable
from kvmdune.linux.forward import Call, NotForwardable, forward
from kvmdune.linux.host_unsafe import host_syscall
from kvmdune.linux.syscall_table import SYSCALLS
from kvmdune.linux.uaccess import PATH_MAX, Fault
from kvmdune.memory import VMM, AddressSpace, GuestFault, GuestMemory, Perm

BY_NAME = {spec.name: spec for spec in SYSCALLS.values()}
PAGE = 4096
USER_RW = Perm.READ | Perm.WRITE | Perm.USER
USER_RO = Perm.READ | Perm.USER

RW = 0x10000                      # 4 pages, read-write, then an unmapped page
RW_END = RW + 4 * PAGE
RO = 0x20000                      # 1 page, read-only
UNMAPPED = 0x30000
KERNEL = 0xFFFF_8000_0000_0000    # mapped, but supervisor-only
NON_CANONICAL = 0x0000_8000_0000_0000
SENTINEL = 0xA5
AT_FDCWD = -100 & 0xFFFF_FFFF_FFFF_FFFF
EPOLLIN = 1
EPOLL_CTL_ADD = 1


@dataclass
class GuestProcess:
    """What the forwarder asks of a process: its address space and descriptor table
    (both real), the host path for a guest path (here the same path) and the live
    /proc file behind a descriptor (here none)."""

    space: AddressSpace
    fds: FdTable

    def host_path(self, path: bytes, dirfd: int | None = None) -> bytes:
        return path

    def adopt_fd(self, host_fd: int) -> int:
        return self.fds.install(host_fd)

    def host_call(self, call, host_fds) -> int:
        return call()

    def live_file_of(self, host_fd: int) -> None:
        return None


@pytest.fixture(scope="module")
def memory():
    memory = GuestMemory(16 << 20)
    yield memory
    memory.close()


@pytest.fixture
def proc(memory):
    space = AddressSpace(memory)
    space.map(RW, 4 * PAGE, USER_RW)
    space.map(RO, PAGE, USER_RO)
    space.map(KERNEL, PAGE, Perm.READ | Perm.WRITE)
    space.write(RW, bytes([SENTINEL]) * 4 * PAGE, VMM)
    space.write(RO, bytes([SENTINEL]) * PAGE, VMM)
    fds = FdTable()
    yield GuestProcess(space, fds)
    fds.close_all()
    space.close()


def guest_fd(proc: GuestProcess, host_fd: int) -> int:
    return proc.fds.install(host_fd)


@pytest.fixture
def pipe(proc):
    """A host pipe as guest descriptors (read end, write end), and the host's ends."""
    read_end, write_end = os.pipe()
    return guest_fd(proc, read_end), guest_fd(proc, write_end)


def host(proc: GuestProcess, fd: int) -> int:
    return proc.fds.host(fd)


def call(proc: GuestProcess, name: str, *args: int) -> int:
    return forward(proc, BY_NAME[name], tuple(args) + (0,) * (6 - len(args)))


def faults(proc: GuestProcess, name: str, *args: int) -> int:
    """The errno a call fails with before or after the host call (Fault or -errno)."""
    try:
        result = call(proc, name, *args)
    except Fault as exc:
        return exc.errno
    except GuestFault:           # the dispatcher answers EFAULT for it, in one place
        return errno.EFAULT
    assert result < 0, f"{name}{args} succeeded: {result}"
    return -result


def guest_bytes(proc: GuestProcess, address: int, length: int) -> bytes:
    return proc.space.read(address, length, VMM)


def put(proc: GuestProcess, address: int, data: bytes) -> None:
    proc.space.write(address, data, VMM)


def untouched(proc: GuestProcess, address: int, length: int) -> bool:
    return guest_bytes(proc, address, length) == bytes([SENTINEL]) * length


# -- paths and strings -------------------------------------------------------------

def test_a_path_is_copied_in_and_the_new_descriptor_is_the_guests(proc, tmp_path):
    target = tmp_path / "file"
    target.write_bytes(b"contents")
    put(proc, RO, str(target).encode() + b"\0")            # the kernel only reads it
    fd = call(proc, "openat", AT_FDCWD, RO, os.O_RDONLY)
    assert fd >= 0 and proc.fds.host(fd) not in (None, fd)
    assert os.pread(host(proc, fd), 8, 0) == b"contents"


@pytest.mark.parametrize("where", [UNMAPPED, KERNEL, NON_CANONICAL, 0xFFF,
                                   0xFFFF_FFFF_FFFF_FFFF])
def test_a_path_at_a_bad_address_is_efault(proc, where):
    assert faults(proc, "openat", AT_FDCWD, where, os.O_RDONLY) == errno.EFAULT


def test_an_unterminated_path_running_into_unmapped_memory_is_efault(proc, tmp_path):
    put(proc, RW_END - 4, b"/tmp")                         # no NUL before the end
    assert faults(proc, "openat", AT_FDCWD, RW_END - 4, os.O_RDONLY) == errno.EFAULT
    put(proc, RW_END - 5, b"/tmp\0")                       # the same, terminated
    fd = call(proc, "openat", AT_FDCWD, RW_END - 5, os.O_RDONLY | os.O_DIRECTORY)
    assert fd >= 0


def test_a_path_longer_than_path_max_is_enametoolong(proc):
    put(proc, RW, b"/" * PATH_MAX + b"\0")
    assert faults(proc, "openat", AT_FDCWD, RW, os.O_RDONLY) == errno.ENAMETOOLONG
    put(proc, RW + 1, b"\0")                               # "/" alone: a control
    assert call(proc, "openat", AT_FDCWD, RW, os.O_RDONLY | os.O_DIRECTORY) >= 0


def test_a_string_argument_is_copied_in(proc):
    put(proc, RO, b"forwarded-name\0")
    fd = call(proc, "memfd_create", RO, 0)
    assert fd >= 0
    assert os.readlink(f"/proc/self/fd/{host(proc, fd)}").startswith("/memfd:forwarded-name")
    assert faults(proc, "memfd_create", KERNEL, 0) == errno.EFAULT


# -- plain buffers -------------------------------------------------------------------

def test_an_in_buffer_reaches_the_host(proc, pipe):
    read_end, write_end = pipe
    put(proc, RO, b"hello")                                # read-only is enough to read
    assert call(proc, "write", write_end, RO, 5) == 5
    assert os.read(host(proc, read_end), 100) == b"hello"


@pytest.mark.parametrize("where", [UNMAPPED, KERNEL, NON_CANONICAL, RW_END - 2])
def test_an_in_buffer_at_a_bad_address_is_efault_and_nothing_is_written(proc, pipe, where):
    read_end, write_end = pipe
    assert faults(proc, "write", write_end, where, 5) == errno.EFAULT
    os.set_blocking(host(proc, read_end), False)
    with pytest.raises(BlockingIOError):
        os.read(host(proc, read_end), 100)


def test_an_out_buffer_gets_exactly_the_bytes_read(proc, pipe):
    read_end, write_end = pipe
    os.write(host(proc, write_end), b"12345")
    assert call(proc, "read", read_end, RW, 100) == 5
    assert guest_bytes(proc, RW, 5) == b"12345"
    assert untouched(proc, RW + 5, 95)                     # not the whole buffer


@pytest.mark.parametrize("where", [RO, UNMAPPED, KERNEL, NON_CANONICAL, RW_END - 2])
def test_an_out_buffer_at_a_bad_address_is_efault_before_the_call(proc, pipe, where):
    read_end, write_end = pipe
    os.write(host(proc, write_end), b"12345")
    assert faults(proc, "read", read_end, where, 5) == errno.EFAULT
    assert os.read(host(proc, read_end), 100) == b"12345"  # nothing was consumed
    assert untouched(proc, RO, PAGE)


def test_a_null_out_buffer_is_the_kernels_to_refuse(proc, pipe):
    read_end, write_end = pipe
    os.write(host(proc, write_end), b"x")
    assert call(proc, "read", read_end, 0, 1) == -errno.EFAULT


def test_a_fixed_size_out_struct_is_written_whole_and_checked_whole(proc):
    assert call(proc, "clock_gettime", 1, RW) == 0        # CLOCK_MONOTONIC
    seconds, nanoseconds = struct.unpack("<qq", guest_bytes(proc, RW, 16))
    assert seconds > 0 and 0 <= nanoseconds < 1_000_000_000
    assert untouched(proc, RW + 16, 16)
    for where in (RO, RW_END - 8, UNMAPPED, KERNEL):
        assert faults(proc, "clock_gettime", 1, where) == errno.EFAULT
    assert untouched(proc, RW_END - 8, 8)


def test_a_huge_length_is_efault_not_a_host_allocation(proc, pipe, tmp_path):
    read_end, write_end = pipe
    # Past the user half: Linux's access_ok refuses it before anything else.
    assert faults(proc, "read", read_end, RW, 0x7FFF_FFFF_FFFF_FFFF) == errno.EFAULT
    # A pipe with less queued than is mapped: read as Linux reads it.
    os.write(host(proc, write_end), b"xyz")
    assert call(proc, "read", read_end, RW, 0xFFFF_FFFF) == 3
    # A file fills what is mapped, as Linux does; the host gets a buffer of the
    # mapped part, never 4 GiB.
    (tmp_path / "f").write_bytes(b"abc")
    fd = guest_fd(proc, os.open(tmp_path / "f", os.O_RDONLY))
    assert call(proc, "read", fd, RW, 0xFFFF_FFFF) == 3
    assert guest_bytes(proc, RW, 3) == b"abc" and untouched(proc, RW + 3, 16)


def test_an_out_buffer_unmapped_during_the_call_is_efault_at_copy_out(proc, pipe):
    read_end, write_end = pipe
    os.write(host(proc, write_end), b"late")
    spec = BY_NAME["read"]
    forwarded = Call(proc, spec, (read_end, RW + 3 * PAGE, 4))
    forwarded.prepare()
    result = host_syscall(spec.number, *forwarded.host_args)
    assert result == 4
    proc.space.unmap(RW + 3 * PAGE, PAGE)                  # gone before the copy-out
    assert forwarded.finish(result) == -errno.EFAULT


def test_a_failed_call_copies_nothing_back(proc):
    spec = BY_NAME["read"]
    read_end, write_end = os.pipe()
    fd = guest_fd(proc, read_end)
    os.set_blocking(host(proc, fd), False)
    forwarded = Call(proc, spec, (fd, RW, 16))
    forwarded.prepare()
    result = host_syscall(spec.number, *forwarded.host_args)
    assert result == -errno.EAGAIN
    assert forwarded.finish(result) == -errno.EAGAIN
    assert untouched(proc, RW, 16)
    os.close(write_end)


def test_a_descriptor_the_guest_does_not_have_is_ebadf(proc):
    assert faults(proc, "read", 999, RW, 1) == errno.EBADF
    assert faults(proc, "read", 0xFFFF_FFFF, RW, 1) == errno.EBADF   # (int)-1


# -- in-out buffers ------------------------------------------------------------------

def test_an_inout_buffer_is_read_and_written_back(proc, pipe, tmp_path):
    read_end, write_end = pipe
    source = tmp_path / "source"
    source.write_bytes(b"0123456789")
    in_fd = guest_fd(proc, os.open(source, os.O_RDONLY))
    put(proc, RW, struct.pack("<q", 2))                    # the offset: in, then out
    assert call(proc, "sendfile", write_end, in_fd, RW, 3) == 3
    assert os.read(host(proc, read_end), 10) == b"234"
    assert struct.unpack("<q", guest_bytes(proc, RW, 8)) == (5,)
    assert untouched(proc, RW + 8, 8)


@pytest.mark.parametrize("where", [RO, UNMAPPED, KERNEL, RW_END - 4])
def test_an_inout_buffer_must_be_writable(proc, pipe, tmp_path, where):
    read_end, write_end = pipe
    source = tmp_path / "source"
    source.write_bytes(b"0123456789")
    in_fd = guest_fd(proc, os.open(source, os.O_RDONLY))
    assert faults(proc, "sendfile", write_end, in_fd, where, 3) == errno.EFAULT
    os.set_blocking(host(proc, read_end), False)
    with pytest.raises(BlockingIOError):                   # nothing was sent
        os.read(host(proc, read_end), 10)


# -- iovecs --------------------------------------------------------------------------

def iovecs(proc: GuestProcess, at: int, *pieces: tuple[int, int]) -> int:
    put(proc, at, b"".join(struct.pack("<QQ", base, length) for base, length in pieces))
    return at


def test_an_input_iovec_gathers_every_piece(proc, pipe):
    read_end, write_end = pipe
    put(proc, RO, b"abc")
    put(proc, RW + PAGE, b"defgh")
    vector = iovecs(proc, RW, (RO, 3), (RW + PAGE, 5), (UNMAPPED, 0))
    assert call(proc, "writev", write_end, vector, 3) == 8
    assert os.read(host(proc, read_end), 100) == b"abcdefgh"


def test_an_output_iovec_scatters_exactly_the_bytes_read(proc, pipe):
    read_end, write_end = pipe
    os.write(host(proc, write_end), b"123456")
    vector = iovecs(proc, RW, (RW + PAGE, 4), (RW + 2 * PAGE, 8))
    assert call(proc, "readv", read_end, vector, 2) == 6
    assert guest_bytes(proc, RW + PAGE, 4) == b"1234"
    assert guest_bytes(proc, RW + 2 * PAGE, 2) == b"56"
    assert untouched(proc, RW + PAGE + 4, 4) and untouched(proc, RW + 2 * PAGE + 2, 6)


@pytest.mark.parametrize("base", [RO, UNMAPPED, KERNEL, NON_CANONICAL, RW_END - 2])
def test_an_output_iovec_piece_at_a_bad_address_is_efault_before_the_call(proc, pipe, base):
    read_end, write_end = pipe
    os.write(host(proc, write_end), b"123456")
    vector = iovecs(proc, RW, (RW + PAGE, 2), (base, 4))
    assert faults(proc, "readv", read_end, vector, 2) == errno.EFAULT
    assert os.read(host(proc, read_end), 100) == b"123456"
    assert untouched(proc, RW + PAGE, 2)


@pytest.mark.parametrize("base", [UNMAPPED, KERNEL, NON_CANONICAL, RW_END - 2])
def test_an_input_iovec_piece_at_a_bad_address_is_efault(proc, pipe, base):
    read_end, write_end = pipe
    vector = iovecs(proc, RW, (RO, 2), (base, 4))
    assert faults(proc, "writev", write_end, vector, 2) == errno.EFAULT


@pytest.mark.parametrize("where", [UNMAPPED, KERNEL, RW_END - 8])
def test_an_iovec_array_at_a_bad_address_is_efault(proc, pipe, where):
    read_end, write_end = pipe
    assert faults(proc, "writev", write_end, where, 1) == errno.EFAULT


def test_too_many_iovecs_is_einval(proc, pipe):
    read_end, write_end = pipe
    assert faults(proc, "writev", write_end, RW, 1025) == errno.EINVAL


# -- socket addresses ---------------------------------------------------------------

@pytest.fixture
def bound_socket(proc):
    """A guest descriptor for a unix socket bound to an abstract name, and the
    address Linux gives for it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(f"\0kvmdune-forward-test-{os.getpid()}")
    expected_length = 2 + len(sock.getsockname())
    fd = guest_fd(proc, sock.detach())
    return fd, expected_length


def test_a_socket_address_out_and_its_length(proc, bound_socket):
    fd, length = bound_socket
    put(proc, RW + PAGE, struct.pack("<I", 110))           # capacity: sun_path's whole
    assert call(proc, "getsockname", fd, RW, RW + PAGE) == 0
    assert struct.unpack("<I", guest_bytes(proc, RW + PAGE, 4)) == (length,)
    family, = struct.unpack("<H", guest_bytes(proc, RW, 2))
    assert family == socket.AF_UNIX
    assert guest_bytes(proc, RW + 2, 1) == b"\0"           # an abstract name
    # Linux copies min(length, capacity) bytes of the address and no more.
    assert untouched(proc, RW + length, 110 - length)


def test_a_socket_address_longer_than_its_buffer_is_cut_and_the_length_is_full(
        proc, bound_socket):
    fd, length = bound_socket
    put(proc, RW + PAGE, struct.pack("<I", 4))
    assert call(proc, "getsockname", fd, RW, RW + PAGE) == 0
    assert struct.unpack("<I", guest_bytes(proc, RW + PAGE, 4)) == (length,)
    assert struct.unpack("<H", guest_bytes(proc, RW, 2)) == (socket.AF_UNIX,)
    assert untouched(proc, RW + 4, 16)


@pytest.mark.parametrize("address, length_at", [
    (RO, RW + PAGE), (UNMAPPED, RW + PAGE), (KERNEL, RW + PAGE), (RW_END - 4, RW + PAGE),
    (RW, RO), (RW, UNMAPPED), (RW, KERNEL), (RW, RW_END - 2),
])
def test_a_socket_address_or_its_length_at_a_bad_address_is_efault(
        proc, bound_socket, address, length_at):
    fd, _ = bound_socket
    if length_at in (RW + PAGE, RW_END - 2):
        put(proc, length_at, struct.pack("<I", 110)[:RW_END - length_at])
    assert faults(proc, "getsockname", fd, address, length_at) == errno.EFAULT


# -- out buffers sized by the result --------------------------------------------------

def test_epoll_wait_copies_back_the_events_it_returns_and_no_more(proc, pipe):
    read_end, write_end = pipe
    epoll = call(proc, "epoll_create1", 0)
    put(proc, RO, struct.pack("<IQ", EPOLLIN, 0x1122334455667788))   # packed: 12 bytes
    assert call(proc, "epoll_ctl", epoll, EPOLL_CTL_ADD, read_end, RO) == 0
    os.write(host(proc, write_end), b"ready")
    assert call(proc, "epoll_wait", epoll, RW, 4, 0) == 1
    assert struct.unpack("<IQ", guest_bytes(proc, RW, 12)) == (EPOLLIN, 0x1122334455667788)
    assert untouched(proc, RW + 12, 3 * 12)


def test_getgroups_copies_back_the_groups_it_returns(proc):
    expected = os.getgroups()
    count = call(proc, "getgroups", 64, RW)
    assert count == len(expected)
    assert list(struct.unpack(f"<{count}I", guest_bytes(proc, RW, 4 * count))) == expected
    assert untouched(proc, RW + 4 * count, 16)


def test_a_byte_count_result_copies_back_that_many_bytes(proc, tmp_path):
    target = tmp_path / "link"
    os.symlink("/some/where", target)
    put(proc, RO, str(target).encode() + b"\0")
    assert call(proc, "readlinkat", AT_FDCWD, RO, RW, 100) == len("/some/where")
    assert guest_bytes(proc, RW, 11) == b"/some/where"
    assert untouched(proc, RW + 11, 89)


# -- socket addresses in, and what the table cannot describe ------------------------

def test_a_socket_address_in_reaches_the_host(proc):
    name = f"\0kvmdune-forward-in-{os.getpid()}".encode()
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(name)
    sender = guest_fd(proc, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).detach())
    address = struct.pack("<H", socket.AF_UNIX) + name
    put(proc, RO, address)
    put(proc, RW, b"datagram")
    try:
        assert call(proc, "sendto", sender, RW, 8, 0, RO, len(address)) == 8
        assert receiver.recv(100) == b"datagram"
        for where in (UNMAPPED, KERNEL, RO + PAGE - 4):
            assert faults(proc, "sendto", sender, RW, 8, 0, where, len(address)) == errno.EFAULT
    finally:
        receiver.close()


def test_a_pointer_the_table_cannot_describe_is_never_forwarded(proc):
    # keyctl's arguments are opaque: their layout depends on the command.
    with pytest.raises(NotForwardable):
        call(proc, "keyctl", 0, 0xFFFF_FFFF_FFFF_FFFD, RW)
    # Without the pointer the call is the kernel's to answer (a control).
    assert call(proc, "keyctl", 0xFFFF, 0, 0) == -errno.EOPNOTSUPP
