"""The x86-64 Linux system call table: one literal, number -> SyscallSpec.

Owns the declaration of every system call the guest can make: its number
and name, each argument's kind (integer, descriptor, path, in/out buffer and
how long it is, flags and their table, ...), how the result reads, the
family that selects the handler module, and whether forwarding it as it is
would act on the VMM process itself (``vmm_sensitive``).

One declaration drives three users (gVisor's ``strace/linux64_amd64.go``
shape, see STYLE.md 11-12): pointer checking and forwarding (which
arguments are guest pointers, in which direction, how many bytes), the
``--trace`` formatter (:mod:`kvmdune.linux.strace`), and sandbox policy and
audit records.  Nothing here touches memory or implements a call.

Arguments whose meaning depends on another argument (fcntl's third, ioctl's
third, futex's tail, open's mode) are :class:`Dep` entries; use
:func:`resolve_args` to get the concrete :class:`Arg` (or None: unused and
not printed) for one call, and :func:`arg_extent` for the byte length of a
pointer argument.

Argument names follow the man-page prototypes; numbers and presence follow
``arch/x86/entry/syscalls/syscall_64.tbl`` up to Linux 6.18.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Final, Generic, Mapping, TypeVar

from kvmdune.linux import abi
from kvmdune.linux.abi import FlagSet

# --- the schema ---------------------------------------------------------------


class ArgKind(enum.Enum):
    """What an argument register holds.

    Integers: INT/UINT are C int/unsigned (low 32 bits, as the kernel reads
    them) unless ``Arg.wide`` (long, size_t, off_t: all 64 bits).

    Pointers the kernel dereferences, with their extent declared:
    PATH, STRING (NUL-terminated, read), IN_BUF/OUT_BUF/INOUT_BUF (extent from
    the Arg's size fields), IOVEC (``count_arg`` struct iovec, each pointing
    at a buffer in ``Arg.direction``), MSGHDR (struct msghdr with nested
    pointers), SOCKADDR (read, ``size_arg`` bytes), SOCKADDR_OUT (written,
    capacity in the socklen_t at ``size_ptr_arg``), STRING_ARRAY
    (NULL-terminated array of string pointers: argv, envp).

    Pointers the kernel does not dereference: PTR (kept or compared, e.g.
    set_tid_address, clone's tls) and ADDR (an address in the guest's own
    address space: mmap, munmap, mprotect, brk...).

    OPAQUE: a pointer the kernel dereferences in a way this table does not
    describe (the layout depends on a command or on a length stored inside
    the pointed-to memory).  A forwarder must not pass it through without a
    handler that knows the layout.
    """

    INT = "int"
    UINT = "uint"
    HEX = "hex"
    FD = "fd"
    DIRFD = "dirfd"
    PID = "pid"
    SIGNAL = "signal"
    MODE = "mode"
    DEV = "dev"
    FLAGS = "flags"
    ENUM = "enum"
    PATH = "path"
    STRING = "string"
    IN_BUF = "in_buf"
    OUT_BUF = "out_buf"
    INOUT_BUF = "inout_buf"
    IOVEC = "iovec"
    MSGHDR = "msghdr"
    SOCKADDR = "sockaddr"
    SOCKADDR_OUT = "sockaddr_out"
    STRING_ARRAY = "string_array"
    PTR = "ptr"
    ADDR = "addr"
    OPAQUE = "opaque"


INTEGER_KINDS: Final = frozenset(
    {
        ArgKind.INT,
        ArgKind.UINT,
        ArgKind.HEX,
        ArgKind.FD,
        ArgKind.DIRFD,
        ArgKind.PID,
        ArgKind.SIGNAL,
        ArgKind.MODE,
        ArgKind.DEV,
        ArgKind.FLAGS,
        ArgKind.ENUM,
    }
)
# Kinds whose register is a guest address the kernel reads or writes.
DEREF_KINDS: Final = frozenset(
    {
        ArgKind.PATH,
        ArgKind.STRING,
        ArgKind.IN_BUF,
        ArgKind.OUT_BUF,
        ArgKind.INOUT_BUF,
        ArgKind.IOVEC,
        ArgKind.MSGHDR,
        ArgKind.SOCKADDR,
        ArgKind.SOCKADDR_OUT,
        ArgKind.STRING_ARRAY,
        ArgKind.OPAQUE,
    }
)


class Direction(enum.Enum):
    """Which way data crosses for a pointer argument, seen from the kernel."""

    NONE = "none"
    IN = "in"  # the kernel reads guest memory
    OUT = "out"  # the kernel writes guest memory
    INOUT = "inout"


class Display(enum.Enum):
    """How strace shows a value when the kind alone does not say it."""

    DEFAULT = "default"
    HEX_STRING = "hex_string"  # every byte as \\xNN (getrandom)
    FULL_STRING = "full_string"  # a NUL-terminated string never truncated (symlink target)
    CSTRING = "cstring"  # an output buffer holding a NUL-terminated string (getcwd)
    ENV_COUNT = "env_count"  # address and /* N vars */ (execve envp)
    OPTVAL = "optval"  # [int] when 4 bytes long, else a string (sockopt values)


@dataclass(frozen=True)
class Struct:
    """A kernel structure a pointer argument points at (x86-64 layout).

    ``size`` is sizeof() for fixed structs, the element size for arrays, and
    1 for byte streams whose length comes from another argument.
    ``has_pointers``: the structure holds further guest pointers, so copying
    its bytes is not enough to forward it.
    """

    name: str
    size: int
    has_pointers: bool = False


# Struct layouts, sizes from the x86-64 uapi headers (tests pin the ones glibc exposes).
BYTES = Struct("char", 1)  # the unit of byte buffers sized by another argument
CHAR = Struct("char[1]", 1)  # exactly one byte (TIOCSTI)
STAT = Struct("stat", 144)
STATX = Struct("statx", 256)
STATFS = Struct("statfs", 120)
USTAT = Struct("ustat", 32)
TIMESPEC = Struct("timespec", 16)
TIMESPEC_PAIR = Struct("timespec[2]", 32)
TIMEVAL = Struct("timeval", 16)
TIMEVAL_PAIR = Struct("timeval[2]", 32)
TIMEZONE = Struct("timezone", 8)
ITIMERVAL = Struct("itimerval", 32)
ITIMERSPEC = Struct("itimerspec", 32)
TIMEX = Struct("timex", 208)
UTIMBUF = Struct("utimbuf", 16)
TMS = Struct("tms", 32)
RUSAGE = Struct("rusage", 144)
SIGACTION = Struct("sigaction", 32)  # the kernel's: handler, flags, restorer, mask
SIGSET = Struct("sigset", 8)
SIGINFO = Struct("siginfo", 128)
STACK_T = Struct("stack_t", 24)
SIGEVENT = Struct("sigevent", 64)
RLIMIT = Struct("rlimit", 16)
UTSNAME = Struct("utsname", 390)
SYSINFO = Struct("sysinfo", 112)
WINSIZE = Struct("winsize", 8)
TERMIOS = Struct("termios", 36)  # the kernel's struct termios, not glibc's (60)
TERMIOS2 = Struct("termios2", 44)
POLLFD = Struct("pollfd", 8)
EPOLL_EVENT = Struct("epoll_event", 12)  # packed on x86-64
DIRENT64 = Struct("linux_dirent64", 1)
DIRENT = Struct("linux_dirent", 1)
IOVEC = Struct("iovec", 16, has_pointers=True)
MSGHDR = Struct("msghdr", 56, has_pointers=True)
MMSGHDR = Struct("mmsghdr", 64, has_pointers=True)
SOCKADDR = Struct("sockaddr", 1)
SOCKLEN = Struct("socklen_t", 4)
INT32 = Struct("int", 4)
UINT32 = Struct("unsigned int", 4)
FUTEX_WORD = Struct("futex_word", 4)
PID_T = Struct("pid_t", 4)
WSTATUS = Struct("wstatus", 4)
GID_T = Struct("gid_t", 4)
UID_T = Struct("uid_t", 4)
ULONG = Struct("unsigned long", 8)
LOFF = Struct("loff_t", 8)
TIME_T = Struct("time_t", 8)
FD_PAIR = Struct("int[2]", 8)
FD_SET = Struct("fd_set", 8)  # one unsigned long per 64 descriptors
NODEMASK = Struct("nodemask", 8)  # one unsigned long per 64 nodes
MINCORE_VEC = Struct("mincore_vec", 1)  # one byte per 4 KiB page
SCHED_PARAM = Struct("sched_param", 4)
CPU_SET = Struct("cpu_set", 1)  # a bit mask, cpusetsize bytes
SCHED_ATTR = Struct("sched_attr", 1)
FLOCK = Struct("flock", 32)
F_OWNER_EX = Struct("f_owner_ex", 8)
CAP_HEADER = Struct("__user_cap_header_struct", 8)
CAP_DATA = Struct("__user_cap_data_struct[2]", 24)
USER_DESC = Struct("user_desc", 16)
SEMBUF = Struct("sembuf", 6)
SHMID_DS = Struct("shmid_ds", 112)
MSQID_DS = Struct("msqid_ds", 120)
MQ_ATTR = Struct("mq_attr", 64)
IO_EVENT = Struct("io_event", 32)
FUTEX_WAITV = Struct("futex_waitv", 24, has_pointers=True)
CLONE_ARGS = Struct("clone_args", 1, has_pointers=True)
OPEN_HOW = Struct("open_how", 1)
MOUNT_ATTR = Struct("mount_attr", 1)
XATTR_ARGS = Struct("xattr_args", 1, has_pointers=True)
FILE_ATTR = Struct("file_attr", 1)
MNT_ID_REQ = Struct("mnt_id_req", 24)
CACHESTAT_RANGE = Struct("cachestat_range", 16)
CACHESTAT = Struct("cachestat", 40)
SIGSET_ARGPACK = Struct("sigset_argpack", 16, has_pointers=True)  # pselect6, io_pgetevents
IO_URING_PARAMS = Struct("io_uring_params", 120)
RSEQ = Struct("rseq", 32)
PRCTL_NAME = Struct("comm", 16)
U64 = Struct("__u64", 8)


T = TypeVar("T")


@dataclass(frozen=True)
class Dep(Generic[T]):
    """A slot whose declaration depends on another argument's value.

    The selector is ``args[on] & mask``; ``cases`` maps selector values to
    the declaration, ``default`` covers the rest.  For arguments, None means
    the kernel ignores the argument for this selector and strace omits it.
    """

    on: int
    cases: tuple[tuple[int, T], ...]
    default: T
    mask: int = 0xFFFFFFFF

    def select(self, args: tuple[int, ...]) -> T:
        key = args[self.on] & self.mask if self.on < len(args) else 0
        for value, choice in self.cases:
            if value == key:
                return choice
        return self.default


@dataclass(frozen=True)
class Arg:
    """One argument of a system call.

    Extent of a pointer argument, first that applies (see :func:`arg_extent`):
    ``fixed_size`` bytes; ``size_arg``: that argument's value in bytes;
    ``count_arg``: that argument's value, divided (rounding up) by
    ``count_per_elem``, times ``struct.size``; ``size_ptr_arg``: the u32
    that argument points at (socklen_t value-result).  ``out_size_from_ret``:
    after a successful call the return value, in the same unit, says how
    much was written (read, readlink, getdents64, epoll_wait...).
    """

    name: str
    kind: ArgKind
    table: FlagSet | type[enum.IntEnum] | None = None
    wide: bool = False
    struct: Struct | None = None
    fixed_size: int | None = None
    size_arg: int | None = None
    count_arg: int | None = None
    count_per_elem: int = 1
    size_ptr_arg: int | None = None
    out_size_from_ret: bool = False
    direction: Direction = Direction.NONE
    display: Display = Display.DEFAULT
    hidden: bool = False  # decoded and checked, but strace does not print it
    #: An output the kernel writes only when the call is interrupted (nanosleep's
    #: remaining time), and then as part of a failing call (EINTR).
    written_when_interrupted: bool = False
    #: An ``out_size_from_ret`` output the kernel builds whole and copies in one
    #: piece (getxattr, readlink, getcwd): a fault anywhere in what it copies fails
    #: the call with EFAULT, where read(2) returns the part it could write.
    copied_whole: bool = False

    @property
    def is_pointer(self) -> bool:
        """True if the register is a guest address the kernel dereferences."""
        return self.kind in DEREF_KINDS


class RetKind(enum.Enum):
    """How a non-error return value reads."""

    INT = "int"  # decimal
    FD = "fd"  # a new descriptor in the caller's table
    PID = "pid"
    HEX = "hex"  # an address (mmap, brk)
    OCTAL = "octal"  # a mode (umask)
    FLAGS = "flags"  # hex and (flags NAME|NAME), table in Ret.table
    ENUM = "enum"  # decimal and (NAME), table in Ret.table
    NONE = "none"  # never returns (exit, exit_group): strace prints "?"


@dataclass(frozen=True)
class Ret:
    """How a system call's result reads; ``table`` names its flags or values."""

    kind: RetKind
    table: FlagSet | type[enum.IntEnum] | None = None


class Family(enum.Enum):
    """Which handler module (``linux/sys_<family>.py``) serves a call."""

    FILE = "file"  # I/O on an open descriptor
    FS = "fs"  # path names and the file system tree
    MEMORY = "memory"
    PROCESS = "process"
    SIGNAL = "signal"
    NET = "net"
    TIME = "time"
    IPC = "ipc"  # futexes, System V and POSIX IPC
    SCHED = "sched"
    POLL = "poll"  # poll, select, epoll, eventfd, inotify
    CRED = "cred"  # user and group ids, capabilities
    SECURITY = "security"  # seccomp, landlock, keys, LSM
    AIO = "aio"  # io_setup..., io_uring
    MOUNT = "mount"
    SYSTEM = "system"  # whole-machine state: hostname, reboot, modules, swap
    OBSOLETE = "obsolete"  # the kernel answers ENOSYS


ArgSlot = Arg | Dep  # Dep[Arg | None]


@dataclass(frozen=True)
class SyscallSpec:
    """One system call: the declaration every user of the table reads."""

    number: int
    name: str
    args: tuple[ArgSlot, ...]
    ret: Ret | Dep
    family: Family
    vmm_sensitive: bool = False

    @property
    def nargs(self) -> int:
        return len(self.args)


# --- resolution helpers -----------------------------------------------------


def resolve_args(spec: SyscallSpec, args: tuple[int, ...]) -> tuple[Arg | None, ...]:
    """The concrete declaration of each argument for these register values."""
    return tuple(slot.select(args) if isinstance(slot, Dep) else slot for slot in spec.args)


def resolve_ret(spec: SyscallSpec, args: tuple[int, ...]) -> Ret:
    """The concrete return declaration for these register values."""
    return spec.ret.select(args) if isinstance(spec.ret, Dep) else spec.ret


def int_value(arg: Arg, raw: int) -> int:
    """The register as the kernel reads it for this argument's C type.

    32-bit types use the low half (the upper half may hold garbage); signed
    kinds are sign-extended.  Unsigned kinds are returned unsigned.
    """
    if arg.wide:
        value = raw & 0xFFFFFFFFFFFFFFFF
        signed = arg.kind in _SIGNED_KINDS
        return value - (1 << 64) if signed and value >> 63 else value
    value = raw & 0xFFFFFFFF
    if arg.kind in _SIGNED_KINDS and value >> 31:
        return value - (1 << 32)
    return value


_SIGNED_KINDS: Final = frozenset({ArgKind.INT, ArgKind.FD, ArgKind.DIRFD, ArgKind.PID, ArgKind.SIGNAL})
_U32, _U64 = 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF


def _unsigned64(raw: int) -> int:
    return raw & _U64


def _signed64(raw: int) -> int:
    value = raw & _U64
    return value - (1 << 64) if value >> 63 else value


def _unsigned32(raw: int) -> int:
    return raw & _U32


def _signed32(raw: int) -> int:
    value = raw & _U32
    return value - (1 << 32) if value >> 31 else value


def register_reader(arg: Arg) -> Callable[[int], int]:
    """The register as the kernel reads it for ``arg`` (``int_value`` for integer
    kinds, the 64-bit value for the rest), as one function chosen once: the
    dispatcher reads every call's registers, and testing the kind (enum hashes)
    each time costs microseconds per call."""
    if arg.kind not in INTEGER_KINDS:
        return _unsigned64
    signed = arg.kind in _SIGNED_KINDS
    if arg.wide:
        return _signed64 if signed else _unsigned64
    return _signed32 if signed else _unsigned32


def filled_extent(arg: Arg, result: int) -> int:
    """Bytes a successful call wrote to an ``out_size_from_ret`` buffer: the return
    value counts elements for arrays (epoll_wait's events, getgroups' gids), bytes
    otherwise (read, readlink, getdents64)."""
    unit = arg.struct.size if arg.count_arg is not None and arg.struct is not None else 1
    return max(result, 0) * unit


def arg_extent(
    spec: SyscallSpec,
    index: int,
    args: tuple[int, ...],
    read_memory: Callable[[int, int], bytes | None] | None = None,
) -> int | None:
    """Bytes the kernel may touch at pointer argument ``index``, or None.

    None means the extent is not a function of the registers: a
    NUL-terminated string, an argv array, an OPAQUE pointer, an unused
    argument, or a value-result length that ``read_memory`` cannot read.
    For IOVEC and MSGHDR it is the array or header itself; the buffers they
    point at are the handler's to walk.
    """
    resolved = resolve_args(spec, args)
    arg = resolved[index]
    if arg is None:
        return None
    if arg.fixed_size is not None:
        return arg.fixed_size

    def length_register(i: int) -> int:
        other = resolved[i]
        raw = args[i]
        return max(int_value(other, raw), 0) if other is not None else raw

    if arg.size_arg is not None:
        return length_register(arg.size_arg)
    if arg.count_arg is not None and arg.struct is not None:
        units = -(-length_register(arg.count_arg) // arg.count_per_elem)
        return units * arg.struct.size
    if arg.size_ptr_arg is not None:
        where = args[arg.size_ptr_arg]
        raw = read_memory(where, 4) if read_memory is not None and where else None
        return int.from_bytes(raw, "little") if raw is not None and len(raw) == 4 else None
    return None


@dataclass(frozen=True)
class Extent:
    """A guest memory range one argument lets the kernel touch."""

    index: int
    name: str
    addr: int
    length: int | None
    direction: Direction


def pointer_extents(
    spec: SyscallSpec,
    args: tuple[int, ...],
    read_memory: Callable[[int, int], bytes | None] | None = None,
) -> tuple[Extent, ...]:
    """Every dereferenced, non-NULL pointer argument of one call and its extent."""
    out = []
    for index, arg in enumerate(resolve_args(spec, args)):
        if arg is None or not arg.is_pointer or args[index] == 0:
            continue
        out.append(Extent(index, arg.name, args[index], arg_extent(spec, index, args, read_memory), arg.direction))
    return tuple(out)


# --- argument constructors (keep the table one line per call) ---------------


def _int(name: str, *, wide: bool = False) -> Arg:
    return Arg(name, ArgKind.INT, wide=wide)


def _uint(name: str, *, wide: bool = False) -> Arg:
    return Arg(name, ArgKind.UINT, wide=wide)


def _long(name: str) -> Arg:
    """long, off_t, loff_t."""
    return Arg(name, ArgKind.INT, wide=True)


def _size(name: str) -> Arg:
    """size_t, unsigned long."""
    return Arg(name, ArgKind.UINT, wide=True)


def _hex(name: str, *, wide: bool = True) -> Arg:
    return Arg(name, ArgKind.HEX, wide=wide)


def _fd(name: str = "fd") -> Arg:
    return Arg(name, ArgKind.FD)


def _dirfd(name: str = "dirfd") -> Arg:
    return Arg(name, ArgKind.DIRFD)


def _pid(name: str = "pid") -> Arg:
    return Arg(name, ArgKind.PID)


def _sig(name: str = "sig") -> Arg:
    return Arg(name, ArgKind.SIGNAL)


def _mode(name: str = "mode") -> Arg:
    return Arg(name, ArgKind.MODE)


def _dev(name: str = "dev") -> Arg:
    return Arg(name, ArgKind.DEV, wide=True)


def _flags(name: str, table: FlagSet | type[enum.IntFlag], *, wide: bool = False) -> Arg:
    if not isinstance(table, FlagSet):
        table = FlagSet(table.__name__, table)
    return Arg(name, ArgKind.FLAGS, table=table, wide=wide)


def _enum(name: str, table: type[enum.IntEnum], *, wide: bool = False) -> Arg:
    return Arg(name, ArgKind.ENUM, table=table, wide=wide)


def _path(name: str = "pathname") -> Arg:
    return Arg(name, ArgKind.PATH, direction=Direction.IN)


def _str(name: str, display: Display = Display.DEFAULT) -> Arg:
    return Arg(name, ArgKind.STRING, direction=Direction.IN, display=display)


def _buf(
    kind: ArgKind,
    direction: Direction,
    name: str,
    struct: Struct | None,
    size: int | None,
    count: int | None,
    per: int,
    size_ptr: int | None,
    from_ret: bool,
    display: Display,
) -> Arg:
    fixed = None
    if size is None and count is None and size_ptr is None and struct is not None and struct.size > 1:
        fixed = struct.size
    if struct is CHAR:
        fixed = 1
    if count is not None and struct is None:
        raise ValueError(f"{name}: count_arg needs a struct for the element size")
    return Arg(
        name,
        kind,
        struct=struct or (BYTES if size is not None else None),
        fixed_size=fixed,
        size_arg=size,
        count_arg=count,
        count_per_elem=per,
        size_ptr_arg=size_ptr,
        out_size_from_ret=from_ret,
        direction=direction,
        display=display,
    )


def _in(
    name: str,
    struct: Struct | None = None,
    *,
    size: int | None = None,
    count: int | None = None,
    per: int = 1,
    display: Display = Display.DEFAULT,
) -> Arg:
    return _buf(ArgKind.IN_BUF, Direction.IN, name, struct, size, count, per, None, False, display)


def _out(
    name: str,
    struct: Struct | None = None,
    *,
    size: int | None = None,
    count: int | None = None,
    per: int = 1,
    size_ptr: int | None = None,
    from_ret: bool = False,
    display: Display = Display.DEFAULT,
) -> Arg:
    return _buf(ArgKind.OUT_BUF, Direction.OUT, name, struct, size, count, per, size_ptr, from_ret, display)


def _whole(arg: Arg) -> Arg:
    """An output the kernel copies in one piece once the call has built it."""
    return dataclasses.replace(arg, copied_whole=True)


def _REMAINING_TIME(name: str) -> Arg:
    """The remaining time a sleep writes back when a signal interrupts it."""
    return dataclasses.replace(_out(name, TIMESPEC), written_when_interrupted=True)


def _io(
    name: str,
    struct: Struct | None = None,
    *,
    size: int | None = None,
    count: int | None = None,
    per: int = 1,
    size_ptr: int | None = None,
    from_ret: bool = False,
) -> Arg:
    return _buf(ArgKind.INOUT_BUF, Direction.INOUT, name, struct, size, count, per, size_ptr, from_ret, Display.DEFAULT)


def _iov(name: str, count: int, direction: Direction) -> Arg:
    return Arg(name, ArgKind.IOVEC, struct=IOVEC, count_arg=count, direction=direction)


def _msghdr(name: str, direction: Direction) -> Arg:
    return Arg(name, ArgKind.MSGHDR, struct=MSGHDR, fixed_size=MSGHDR.size, direction=direction)


def _sockaddr(name: str, size: int) -> Arg:
    return Arg(name, ArgKind.SOCKADDR, struct=SOCKADDR, size_arg=size, direction=Direction.IN)


def _sockaddr_out(name: str, size_ptr: int) -> Arg:
    return Arg(name, ArgKind.SOCKADDR_OUT, struct=SOCKADDR, size_ptr_arg=size_ptr, direction=Direction.OUT)


def _socklen(name: str = "addrlen") -> Arg:
    return _io(name, SOCKLEN)


def _argv(name: str, display: Display = Display.DEFAULT) -> Arg:
    return Arg(name, ArgKind.STRING_ARRAY, direction=Direction.IN, display=display)


def _ptr(name: str) -> Arg:
    return Arg(name, ArgKind.PTR, wide=True)


def _addr(name: str = "addr") -> Arg:
    return Arg(name, ArgKind.ADDR, wide=True)


def _opaque(name: str) -> Arg:
    return Arg(name, ArgKind.OPAQUE, wide=True, direction=Direction.INOUT)


def _hidden(arg: Arg) -> Arg:
    return Arg(**{**arg.__dict__, "hidden": True})


def _dep(on: int, cases: dict[int, Arg | None], default: Arg | None, mask: int = 0xFFFFFFFF) -> Dep:
    return Dep(on, tuple(cases.items()), default, mask)


R_INT: Final = Ret(RetKind.INT)
R_FD: Final = Ret(RetKind.FD)
R_PID: Final = Ret(RetKind.PID)
R_HEX: Final = Ret(RetKind.HEX)
R_NONE: Final = Ret(RetKind.NONE)

_F = Family
_IN, _OUT, _INOUT = Direction.IN, Direction.OUT, Direction.INOUT


def _open_mode(flags_index: int) -> Dep:
    """open's mode: used (and printed) only with O_CREAT or O_TMPFILE."""
    return _dep(flags_index, {0: None}, _mode(), mask=abi.O_CREAT | abi.O_TMPFILE_BIT)


def _mknod_dev(mode_index: int) -> Dep:
    """mknod's dev: used (and printed) only for character and block devices."""
    dev = _dev()
    return _dep(mode_index, {abi.FileType.S_IFCHR: dev, abi.FileType.S_IFBLK: dev}, None, mask=abi.S_IFMT)


def _protocol() -> Dep:
    """socket(2) protocol: an IPPROTO_* for the IP families, a number otherwise."""
    proto = _enum("protocol", abi.IpProto)
    return _dep(0, {abi.AddressFamily.AF_INET: proto, abi.AddressFamily.AF_INET6: proto}, _int("protocol"))


def _sockopt_name() -> Dep:
    return _dep(1, {abi.SocketLevel.SOL_SOCKET: _enum("optname", abi.SocketOption)}, _int("optname"))


_C = abi.FcntlCmd
_FCNTL_ARG: Final = _dep(
    1,
    {
        _C.F_DUPFD: _int("arg"),
        _C.F_DUPFD_CLOEXEC: _int("arg"),
        _C.F_DUPFD_QUERY: _fd("arg"),
        _C.F_GETFD: None,
        _C.F_GETFL: None,
        _C.F_GETOWN: None,
        _C.F_GETSIG: None,
        _C.F_GETLEASE: None,
        _C.F_GETPIPE_SZ: None,
        _C.F_GET_SEALS: None,
        _C.F_CREATED_QUERY: None,
        _C.F_SETFD: _flags("arg", abi.FdFlags),
        _C.F_SETFL: _flags("arg", abi.OPEN_FLAGS),
        _C.F_GETLK: _io("arg", FLOCK),
        _C.F_OFD_GETLK: _io("arg", FLOCK),
        _C.F_SETLK: _in("arg", FLOCK),
        _C.F_SETLKW: _in("arg", FLOCK),
        _C.F_OFD_SETLK: _in("arg", FLOCK),
        _C.F_OFD_SETLKW: _in("arg", FLOCK),
        _C.F_SETOWN: _pid("arg"),
        _C.F_SETSIG: _sig("arg"),
        _C.F_SETOWN_EX: _in("arg", F_OWNER_EX),
        _C.F_GETOWN_EX: _out("arg", F_OWNER_EX),
        _C.F_GETOWNER_UIDS: _out("arg", Struct("uid_t[2]", 8)),
        _C.F_SETLEASE: _enum("arg", abi.LockType),
        _C.F_NOTIFY: _hex("arg", wide=False),
        _C.F_SETPIPE_SZ: _int("arg"),
        _C.F_ADD_SEALS: _flags("arg", abi.SealFlags),
        _C.F_GET_RW_HINT: _out("arg", U64),
        _C.F_SET_RW_HINT: _in("arg", U64),
        _C.F_GET_FILE_RW_HINT: _out("arg", U64),
        _C.F_SET_FILE_RW_HINT: _in("arg", U64),
        _C.F_CANCELLK: None,
    },
    _opaque("arg"),
)
_FCNTL_RET: Final = Dep(
    1,
    (
        (_C.F_DUPFD, R_FD),
        (_C.F_DUPFD_CLOEXEC, R_FD),
        (_C.F_GETFD, Ret(RetKind.FLAGS, FlagSet("fd_flags", abi.FdFlags))),
        (_C.F_GETFL, Ret(RetKind.FLAGS, abi.OPEN_FLAGS)),
        (_C.F_GETOWN, R_PID),
        (_C.F_GET_SEALS, Ret(RetKind.FLAGS, FlagSet("seals", abi.SealFlags))),
        (_C.F_GETLEASE, Ret(RetKind.ENUM, abi.LockType)),
    ),
    R_INT,
)

_R = abi.IoctlRequest
_IOCTL_ARG: Final = _dep(
    1,
    {
        _R.TCGETS: _out("argp", TERMIOS),
        _R.TCSETS: _in("argp", TERMIOS),
        _R.TCSETSW: _in("argp", TERMIOS),
        _R.TCSETSF: _in("argp", TERMIOS),
        _R.TCGETS2: _out("argp", TERMIOS2),
        _R.TCSETS2: _in("argp", TERMIOS2),
        _R.TCSETSW2: _in("argp", TERMIOS2),
        _R.TCSETSF2: _in("argp", TERMIOS2),
        _R.TIOCGWINSZ: _out("argp", WINSIZE),
        _R.TIOCSWINSZ: _in("argp", WINSIZE),
        _R.TIOCGPGRP: _out("argp", PID_T),
        _R.TIOCSPGRP: _in("argp", PID_T),
        _R.TIOCGSID: _out("argp", PID_T),
        _R.FIONREAD: _out("argp", INT32),
        _R.TIOCOUTQ: _out("argp", INT32),
        _R.FIONBIO: _in("argp", INT32),
        _R.FIOASYNC: _in("argp", INT32),
        _R.TIOCGPTN: _out("argp", UINT32),
        _R.TIOCSPTLCK: _in("argp", INT32),
        _R.TIOCGPTLCK: _out("argp", INT32),
        _R.TIOCGPKT: _out("argp", INT32),
        _R.TIOCGEXCL: _out("argp", INT32),
        _R.TIOCPKT: _in("argp", INT32),
        _R.TIOCMGET: _out("argp", INT32),
        _R.TIOCMSET: _in("argp", INT32),
        _R.TIOCMBIS: _in("argp", INT32),
        _R.TIOCMBIC: _in("argp", INT32),
        _R.TIOCGETD: _out("argp", INT32),
        _R.TIOCSETD: _in("argp", INT32),
        _R.TIOCSTI: _in("argp", CHAR),
        _R.FIOCLEX: None,
        _R.FIONCLEX: None,
        _R.TIOCNOTTY: None,
        _R.TIOCEXCL: None,
        _R.TIOCNXCL: None,
        _R.TIOCSBRK: None,
        _R.TIOCCBRK: None,
        _R.TIOCVHANGUP: None,
        _R.TCSBRK: _int("arg"),
        _R.TCSBRKP: _int("arg"),
        _R.TCXONC: _int("arg"),
        _R.TCFLSH: _int("arg"),
        _R.TIOCSCTTY: _int("arg"),
        _R.TIOCSIG: _sig("arg"),
        _R.TIOCGPTPEER: _flags("arg", abi.OPEN_FLAGS),
    },
    _opaque("arg"),
)
#: TIOCGPTPEER opens the terminal's other end: a new descriptor, the guest's.
_IOCTL_RET: Final = Dep(1, ((_R.TIOCGPTPEER, R_FD),), R_INT)

_FX = abi.FutexOp
_TIMEOUT = _in("timeout", TIMESPEC)
_VAL2 = _uint("val2")
_UADDR2 = _io("uaddr2", FUTEX_WORD)
_VAL3 = _uint("val3")
_VAL3_HEX = _hex("val3", wide=False)
_FUTEX_MASK = 0x7F  # the command without FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME
# Which of futex's last three arguments each command uses (futex(2)); strace prints exactly those.
_FUTEX_TAIL: Final = {
    _FX.FUTEX_WAIT: (_TIMEOUT, None, None),
    _FX.FUTEX_WAKE: (None, None, None),
    _FX.FUTEX_FD: (None, None, None),
    _FX.FUTEX_REQUEUE: (_VAL2, _UADDR2, None),
    _FX.FUTEX_CMP_REQUEUE: (_VAL2, _UADDR2, _VAL3),
    _FX.FUTEX_WAKE_OP: (_VAL2, _UADDR2, _VAL3_HEX),
    _FX.FUTEX_LOCK_PI: (_TIMEOUT, None, None),
    _FX.FUTEX_LOCK_PI2: (_TIMEOUT, None, None),
    _FX.FUTEX_UNLOCK_PI: (None, None, None),
    _FX.FUTEX_TRYLOCK_PI: (None, None, None),
    _FX.FUTEX_WAIT_BITSET: (_TIMEOUT, None, _VAL3_HEX),
    _FX.FUTEX_WAKE_BITSET: (None, None, _VAL3_HEX),
    _FX.FUTEX_WAIT_REQUEUE_PI: (_TIMEOUT, _UADDR2, None),
    _FX.FUTEX_CMP_REQUEUE_PI: (_VAL2, _UADDR2, _VAL3),
}


def _futex_slot(position: int, default: Arg) -> Dep:
    cases = {int(op): tail[position] for op, tail in _FUTEX_TAIL.items()}
    return _dep(1, cases, default, mask=_FUTEX_MASK)


def _futex_val() -> Dep:
    # UNLOCK_PI and TRYLOCK_PI take no value; strace prints just two arguments.
    return _dep(1, {_FX.FUTEX_UNLOCK_PI: None, _FX.FUTEX_TRYLOCK_PI: None}, _uint("val"), mask=_FUTEX_MASK)


_PR = abi.PrctlOption
_PRCTL_NUMBERS = (_size("arg2"), _size("arg3"), _size("arg4"), _size("arg5"))
# arg2..arg5 of the prctl options declared here; strace prints exactly these.
_PRCTL_ARGS: Final[dict[int, tuple[Arg, ...]]] = {
    **{
        option: ()
        for option in (
            _PR.PR_GET_DUMPABLE, _PR.PR_GET_KEEPCAPS, _PR.PR_GET_TIMING, _PR.PR_GET_SECCOMP,
            _PR.PR_GET_SECUREBITS, _PR.PR_GET_TIMERSLACK, _PR.PR_GET_NO_NEW_PRIVS, _PR.PR_GET_THP_DISABLE,
            _PR.PR_GET_IO_FLUSHER, _PR.PR_TASK_PERF_EVENTS_DISABLE, _PR.PR_TASK_PERF_EVENTS_ENABLE,
            _PR.PR_MCE_KILL_GET, _PR.PR_GET_MDWE, _PR.PR_GET_MEMORY_MERGE,
        )
    },
    **{
        option: _PRCTL_NUMBERS[:1]
        for option in (
            _PR.PR_SET_DUMPABLE, _PR.PR_SET_KEEPCAPS, _PR.PR_SET_CHILD_SUBREAPER, _PR.PR_SET_TIMERSLACK,
            _PR.PR_CAPBSET_READ, _PR.PR_CAPBSET_DROP, _PR.PR_SET_SECUREBITS, _PR.PR_SET_TIMING,
        )
    },
    _PR.PR_SET_NO_NEW_PRIVS: _PRCTL_NUMBERS,
    _PR.PR_SET_THP_DISABLE: _PRCTL_NUMBERS,
    _PR.PR_SET_NAME: (_in("arg2", PRCTL_NAME),),
    _PR.PR_GET_NAME: (_out("arg2", PRCTL_NAME),),
    _PR.PR_SET_PDEATHSIG: (_sig("arg2"),),
    _PR.PR_GET_PDEATHSIG: (_out("arg2", INT32),),
    _PR.PR_GET_CHILD_SUBREAPER: (_out("arg2", INT32),),
    _PR.PR_GET_TID_ADDRESS: (_out("arg2", ULONG),),
}


def _prctl_arg(position: int) -> Dep:
    """prctl's argument ``position`` (1..4): options not declared here are opaque."""
    cases = {option: (args[position - 1] if position <= len(args) else None) for option, args in _PRCTL_ARGS.items()}
    return _dep(0, cases, _opaque(f"arg{position + 1}"))


_ARCH = abi.ArchPrctlCode
_ARCH_PRCTL_ADDR: Final = _dep(
    0,
    {
        _ARCH.ARCH_SET_FS: _hex("addr"),
        _ARCH.ARCH_SET_GS: _hex("addr"),
        _ARCH.ARCH_GET_FS: _out("addr", ULONG),
        _ARCH.ARCH_GET_GS: _out("addr", ULONG),
        _ARCH.ARCH_GET_CPUID: None,
        _ARCH.ARCH_SET_CPUID: _int("addr"),
        _ARCH.ARCH_GET_XCOMP_SUPP: _out("addr", U64),
        _ARCH.ARCH_GET_XCOMP_PERM: _out("addr", U64),
        _ARCH.ARCH_GET_XCOMP_GUEST_PERM: _out("addr", U64),
        _ARCH.ARCH_REQ_XCOMP_PERM: _size("addr"),
        _ARCH.ARCH_REQ_XCOMP_GUEST_PERM: _size("addr"),
    },
    _opaque("addr"),
)


def _ipc_ctl_buf(cmds: type[enum.IntEnum], struct: Struct) -> Dep:
    return _dep(
        1,
        {
            cmds["IPC_RMID"]: _ptr("buf"),
            cmds["IPC_SET"]: _in("buf", struct),
            cmds["IPC_STAT"]: _out("buf", struct),
        },
        _opaque("buf"),
    )


def _s(
    number: int,
    name: str,
    family: Family,
    args: tuple[ArgSlot, ...] = (),
    ret: Ret | Dep = R_INT,
    *,
    sensitive: bool = False,
) -> SyscallSpec:
    return SyscallSpec(number, name, args, ret, family, sensitive)


# Shorthands used many times below.
_FD = _fd()
_PATHNAME = _path()
_STATBUF = _out("statbuf", STAT)
_OPEN_FLAGS = _flags("flags", abi.OPEN_FLAGS)
_AT_FLAGS = _flags("flags", abi.AT_FLAGS)
_SIGSETSIZE = _size("sigsetsize")
_CLOCKID = _enum("clockid", abi.ClockId)
_MSG_FLAGS = _flags("flags", abi.MsgFlags)
_OWNER, _GROUP = _int("owner"), _int("group")
_XATTR_NAME = _str("name")
_EPOLL_EVENTS_OUT = _out("events", EPOLL_EVENT, count=2, from_ret=True)
_RWF = _hex("flags", wide=False)  # RWF_* for preadv2/pwritev2
_EMPTY: tuple[ArgSlot, ...] = ()

# fmt: off
_TABLE: Final[tuple[SyscallSpec, ...]] = (
    _s(0, "read", _F.FILE, (_FD, _out("buf", size=2, from_ret=True), _size("count"))),
    _s(1, "write", _F.FILE, (_FD, _in("buf", size=2), _size("count"))),
    _s(2, "open", _F.FS, (_PATHNAME, _OPEN_FLAGS, _open_mode(1)), R_FD),
    _s(3, "close", _F.FILE, (_FD,)),
    _s(4, "stat", _F.FS, (_PATHNAME, _STATBUF)),
    _s(5, "fstat", _F.FILE, (_FD, _STATBUF)),
    _s(6, "lstat", _F.FS, (_PATHNAME, _STATBUF)),
    _s(7, "poll", _F.POLL, (_io("fds", POLLFD, count=1), _uint("nfds"), _int("timeout"))),
    _s(8, "lseek", _F.FILE, (_FD, _long("offset"), _enum("whence", abi.SeekWhence))),
    _s(9, "mmap", _F.MEMORY, (_addr(), _size("length"), _flags("prot", abi.PROT_FLAGS, wide=True),
                              _flags("flags", abi.MAP_FLAGS, wide=True), _fd(), _hex("offset")), R_HEX, sensitive=True),
    _s(10, "mprotect", _F.MEMORY, (_addr(), _size("len"), _flags("prot", abi.PROT_FLAGS, wide=True)), sensitive=True),
    _s(11, "munmap", _F.MEMORY, (_addr(), _size("length")), sensitive=True),
    _s(12, "brk", _F.MEMORY, (_addr(),), R_HEX, sensitive=True),
    _s(13, "rt_sigaction", _F.SIGNAL, (_sig("signum"), _in("act", SIGACTION), _out("oldact", SIGACTION), _SIGSETSIZE),
       sensitive=True),
    _s(14, "rt_sigprocmask", _F.SIGNAL, (_enum("how", abi.SigprocmaskHow), _in("set", SIGSET, size=3),
                                         _out("oldset", SIGSET, size=3), _SIGSETSIZE), sensitive=True),
    _s(15, "rt_sigreturn", _F.SIGNAL, _EMPTY, sensitive=True),
    _s(16, "ioctl", _F.FILE, (_FD, _enum("request", abi.IoctlRequest), _IOCTL_ARG), _IOCTL_RET),
    _s(17, "pread64", _F.FILE, (_FD, _out("buf", size=2, from_ret=True), _size("count"), _long("offset"))),
    _s(18, "pwrite64", _F.FILE, (_FD, _in("buf", size=2), _size("count"), _long("offset"))),
    _s(19, "readv", _F.FILE, (_FD, _iov("iov", 2, _OUT), _int("iovcnt"))),
    _s(20, "writev", _F.FILE, (_FD, _iov("iov", 2, _IN), _int("iovcnt"))),
    _s(21, "access", _F.FS, (_PATHNAME, _flags("mode", abi.AccessMode))),
    _s(22, "pipe", _F.FILE, (_out("pipefd", FD_PAIR),)),
    _s(23, "select", _F.POLL, (_int("nfds"), _io("readfds", FD_SET, count=0, per=64),
                                _io("writefds", FD_SET, count=0, per=64), _io("exceptfds", FD_SET, count=0, per=64),
                                _io("timeout", TIMEVAL))),
    _s(24, "sched_yield", _F.SCHED),
    _s(25, "mremap", _F.MEMORY, (_addr("old_address"), _size("old_size"), _size("new_size"),
                                 _flags("flags", abi.MremapFlags),
                                 _dep(3, {0: None}, _addr("new_address"), mask=abi.MremapFlags.MREMAP_FIXED)),
       R_HEX, sensitive=True),
    _s(26, "msync", _F.MEMORY, (_addr(), _size("length"), _flags("flags", abi.MsyncFlags)), sensitive=True),
    _s(27, "mincore", _F.MEMORY, (_addr(), _size("length"), _out("vec", MINCORE_VEC, count=1, per=4096)),
       sensitive=True),
    _s(28, "madvise", _F.MEMORY, (_addr(), _size("length"), _enum("advice", abi.MadviseAdvice)), sensitive=True),
    _s(29, "shmget", _F.IPC, (_hex("key", wide=False), _size("size"), _hex("shmflg", wide=False))),
    _s(30, "shmat", _F.IPC, (_int("shmid"), _addr("shmaddr"), _hex("shmflg", wide=False)), R_HEX, sensitive=True),
    _s(31, "shmctl", _F.IPC, (_int("shmid"), _enum("cmd", abi.ShmCtlCmd), _ipc_ctl_buf(abi.ShmCtlCmd, SHMID_DS))),
    _s(32, "dup", _F.FILE, (_fd("oldfd"),), R_FD),
    _s(33, "dup2", _F.FILE, (_fd("oldfd"), _fd("newfd")), R_FD),
    _s(34, "pause", _F.SIGNAL),
    _s(35, "nanosleep", _F.TIME, (_in("req", TIMESPEC), _REMAINING_TIME("rem"))),
    _s(36, "getitimer", _F.TIME, (_enum("which", abi.ItimerWhich), _out("curr_value", ITIMERVAL)), sensitive=True),
    _s(37, "alarm", _F.TIME, (_uint("seconds"),), sensitive=True),
    _s(38, "setitimer", _F.TIME, (_enum("which", abi.ItimerWhich), _in("new_value", ITIMERVAL),
                                  _out("old_value", ITIMERVAL)), sensitive=True),
    _s(39, "getpid", _F.PROCESS, _EMPTY, R_PID),
    _s(40, "sendfile", _F.FILE, (_fd("out_fd"), _fd("in_fd"), _io("offset", LOFF), _size("count"))),
    _s(41, "socket", _F.NET, (_enum("domain", abi.AddressFamily), _flags("type", abi.SOCKET_TYPE), _protocol()), R_FD),
    _s(42, "connect", _F.NET, (_fd("sockfd"), _sockaddr("addr", 2), _uint("addrlen"))),
    _s(43, "accept", _F.NET, (_fd("sockfd"), _sockaddr_out("addr", 2), _socklen()), R_FD),
    _s(44, "sendto", _F.NET, (_fd("sockfd"), _in("buf", size=2), _size("len"), _MSG_FLAGS,
                              _sockaddr("dest_addr", 5), _uint("addrlen"))),
    _s(45, "recvfrom", _F.NET, (_fd("sockfd"), _out("buf", size=2, from_ret=True), _size("len"), _MSG_FLAGS,
                                _sockaddr_out("src_addr", 5), _socklen())),
    _s(46, "sendmsg", _F.NET, (_fd("sockfd"), _msghdr("msg", _IN), _MSG_FLAGS)),
    _s(47, "recvmsg", _F.NET, (_fd("sockfd"), _msghdr("msg", _INOUT), _MSG_FLAGS)),
    _s(48, "shutdown", _F.NET, (_fd("sockfd"), _enum("how", abi.ShutdownHow))),
    _s(49, "bind", _F.NET, (_fd("sockfd"), _sockaddr("addr", 2), _uint("addrlen"))),
    _s(50, "listen", _F.NET, (_fd("sockfd"), _int("backlog"))),
    _s(51, "getsockname", _F.NET, (_fd("sockfd"), _sockaddr_out("addr", 2), _socklen())),
    _s(52, "getpeername", _F.NET, (_fd("sockfd"), _sockaddr_out("addr", 2), _socklen())),
    _s(53, "socketpair", _F.NET, (_enum("domain", abi.AddressFamily), _flags("type", abi.SOCKET_TYPE), _protocol(),
                                  _out("sv", FD_PAIR))),
    _s(54, "setsockopt", _F.NET, (_fd("sockfd"), _enum("level", abi.SocketLevel), _sockopt_name(),
                                  _in("optval", size=4, display=Display.OPTVAL), _uint("optlen"))),
    _s(55, "getsockopt", _F.NET, (_fd("sockfd"), _enum("level", abi.SocketLevel), _sockopt_name(),
                                  _out("optval", size_ptr=4, display=Display.OPTVAL), _io("optlen", SOCKLEN))),
    # Kernel order on x86-64 (CONFIG_CLONE_BACKWARDS is not set): flags, stack, parent_tid, child_tid, tls.
    _s(56, "clone", _F.PROCESS, (_flags("flags", abi.CLONE_FLAGS, wide=True), _ptr("stack"), _ptr("parent_tid"),
                                 _ptr("child_tid"), _ptr("tls")), R_PID, sensitive=True),
    _s(57, "fork", _F.PROCESS, _EMPTY, R_PID, sensitive=True),
    _s(58, "vfork", _F.PROCESS, _EMPTY, R_PID, sensitive=True),
    _s(59, "execve", _F.PROCESS, (_PATHNAME, _argv("argv"), _argv("envp", Display.ENV_COUNT)), sensitive=True),
    _s(60, "exit", _F.PROCESS, (_int("status"),), R_NONE, sensitive=True),
    _s(61, "wait4", _F.PROCESS, (_pid(), _out("wstatus", WSTATUS), _flags("options", abi.WaitOptions),
                                 _out("rusage", RUSAGE)), R_PID, sensitive=True),
    _s(62, "kill", _F.SIGNAL, (_pid(), _sig()), sensitive=True),
    _s(63, "uname", _F.SYSTEM, (_out("buf", UTSNAME),)),
    _s(64, "semget", _F.IPC, (_hex("key", wide=False), _int("nsems"), _hex("semflg", wide=False))),
    _s(65, "semop", _F.IPC, (_int("semid"), _in("sops", SEMBUF, count=2), _size("nsops"))),
    # The fourth argument is union semun passed by value: an int or a pointer, by cmd.
    _s(66, "semctl", _F.IPC, (_int("semid"), _int("semnum"), _enum("cmd", abi.SemCtlCmd), _opaque("arg"))),
    _s(67, "shmdt", _F.IPC, (_addr("shmaddr"),), sensitive=True),
    _s(68, "msgget", _F.IPC, (_hex("key", wide=False), _hex("msgflg", wide=False))),
    # msgp is a long mtype followed by msgsz bytes: opaque to the plain size rules.
    _s(69, "msgsnd", _F.IPC, (_int("msqid"), _opaque("msgp"), _size("msgsz"), _hex("msgflg", wide=False))),
    _s(70, "msgrcv", _F.IPC, (_int("msqid"), _opaque("msgp"), _size("msgsz"), _long("msgtyp"),
                              _hex("msgflg", wide=False))),
    _s(71, "msgctl", _F.IPC, (_int("msqid"), _enum("cmd", abi.MsgCtlCmd), _ipc_ctl_buf(abi.MsgCtlCmd, MSQID_DS))),
    _s(72, "fcntl", _F.FILE, (_FD, _enum("cmd", abi.FcntlCmd), _FCNTL_ARG), _FCNTL_RET),
    _s(73, "flock", _F.FILE, (_FD, _flags("operation", abi.FlockOp))),
    _s(74, "fsync", _F.FILE, (_FD,)),
    _s(75, "fdatasync", _F.FILE, (_FD,)),
    _s(76, "truncate", _F.FS, (_path("path"), _long("length"))),
    _s(77, "ftruncate", _F.FILE, (_FD, _long("length"))),
    _s(78, "getdents", _F.FILE, (_FD, _out("dirp", DIRENT, size=2, from_ret=True), _uint("count"))),
    # The VMM's cwd is not the guest's: chdir and friends are emulated, so is getcwd.
    _s(79, "getcwd", _F.FS, (_whole(_out("buf", size=1, from_ret=True, display=Display.CSTRING)), _size("size")), sensitive=True),
    _s(80, "chdir", _F.FS, (_path("path"),), sensitive=True),
    _s(81, "fchdir", _F.FS, (_FD,), sensitive=True),
    _s(82, "rename", _F.FS, (_path("oldpath"), _path("newpath"))),
    _s(83, "mkdir", _F.FS, (_PATHNAME, _mode())),
    _s(84, "rmdir", _F.FS, (_PATHNAME,)),
    _s(85, "creat", _F.FS, (_PATHNAME, _mode()), R_FD),
    _s(86, "link", _F.FS, (_path("oldpath"), _path("newpath"))),
    _s(87, "unlink", _F.FS, (_PATHNAME,)),
    # The target is stored, not resolved: a string, printed whole like a path.
    _s(88, "symlink", _F.FS, (_str("target", Display.FULL_STRING), _path("linkpath"))),
    _s(89, "readlink", _F.FS, (_PATHNAME, _whole(_out("buf", size=2, from_ret=True)), _size("bufsiz"))),
    _s(90, "chmod", _F.FS, (_PATHNAME, _mode())),
    _s(91, "fchmod", _F.FILE, (_FD, _mode())),
    _s(92, "chown", _F.FS, (_PATHNAME, _OWNER, _GROUP)),
    _s(93, "fchown", _F.FILE, (_FD, _OWNER, _GROUP)),
    _s(94, "lchown", _F.FS, (_PATHNAME, _OWNER, _GROUP)),
    _s(95, "umask", _F.FS, (_mode("mask"),), Ret(RetKind.OCTAL), sensitive=True),
    _s(96, "gettimeofday", _F.TIME, (_out("tv", TIMEVAL), _out("tz", TIMEZONE))),
    _s(97, "getrlimit", _F.PROCESS, (_enum("resource", abi.RlimitResource), _out("rlim", RLIMIT))),
    _s(98, "getrusage", _F.PROCESS, (_enum("who", abi.RusageWho), _out("usage", RUSAGE))),
    _s(99, "sysinfo", _F.SYSTEM, (_out("info", SYSINFO),)),
    _s(100, "times", _F.TIME, (_out("buf", TMS),)),
    _s(101, "ptrace", _F.PROCESS, (_long("request"), _pid(), _opaque("addr"), _opaque("data")), sensitive=True),
    _s(102, "getuid", _F.CRED),
    _s(103, "syslog", _F.SYSTEM, (_int("type"), _out("bufp", size=2, from_ret=True), _int("len"))),
    _s(104, "getgid", _F.CRED),
    _s(105, "setuid", _F.CRED, (_int("uid"),), sensitive=True),
    _s(106, "setgid", _F.CRED, (_int("gid"),), sensitive=True),
    _s(107, "geteuid", _F.CRED),
    _s(108, "getegid", _F.CRED),
    _s(109, "setpgid", _F.PROCESS, (_pid(), _pid("pgid")), sensitive=True),
    _s(110, "getppid", _F.PROCESS, _EMPTY, R_PID),
    _s(111, "getpgrp", _F.PROCESS, _EMPTY, R_PID),
    _s(112, "setsid", _F.PROCESS, _EMPTY, R_PID, sensitive=True),
    _s(113, "setreuid", _F.CRED, (_int("ruid"), _int("euid")), sensitive=True),
    _s(114, "setregid", _F.CRED, (_int("rgid"), _int("egid")), sensitive=True),
    _s(115, "getgroups", _F.CRED, (_int("size"), _whole(_out("list", GID_T, count=0, from_ret=True)))),
    _s(116, "setgroups", _F.CRED, (_size("size"), _in("list", GID_T, count=0)), sensitive=True),
    _s(117, "setresuid", _F.CRED, (_int("ruid"), _int("euid"), _int("suid")), sensitive=True),
    _s(118, "getresuid", _F.CRED, (_out("ruid", UID_T), _out("euid", UID_T), _out("suid", UID_T))),
    _s(119, "setresgid", _F.CRED, (_int("rgid"), _int("egid"), _int("sgid")), sensitive=True),
    _s(120, "getresgid", _F.CRED, (_out("rgid", GID_T), _out("egid", GID_T), _out("sgid", GID_T))),
    _s(121, "getpgid", _F.PROCESS, (_pid(),), R_PID),
    _s(122, "setfsuid", _F.CRED, (_int("fsuid"),), sensitive=True),
    _s(123, "setfsgid", _F.CRED, (_int("fsgid"),), sensitive=True),
    _s(124, "getsid", _F.PROCESS, (_pid(),), R_PID),
    _s(125, "capget", _F.CRED, (_io("hdrp", CAP_HEADER), _out("datap", CAP_DATA))),
    _s(126, "capset", _F.CRED, (_in("hdrp", CAP_HEADER), _in("datap", CAP_DATA)), sensitive=True),
    _s(127, "rt_sigpending", _F.SIGNAL, (_out("set", SIGSET, size=1), _SIGSETSIZE), sensitive=True),
    _s(128, "rt_sigtimedwait", _F.SIGNAL, (_in("set", SIGSET, size=3), _out("info", SIGINFO), _in("timeout", TIMESPEC),
                                           _SIGSETSIZE), sensitive=True),
    _s(129, "rt_sigqueueinfo", _F.SIGNAL, (_pid("tgid"), _sig(), _in("info", SIGINFO)), sensitive=True),
    _s(130, "rt_sigsuspend", _F.SIGNAL, (_in("mask", SIGSET, size=1), _SIGSETSIZE), sensitive=True),
    _s(131, "sigaltstack", _F.SIGNAL, (_in("ss", STACK_T), _out("old_ss", STACK_T)), sensitive=True),
    _s(132, "utime", _F.FS, (_path("filename"), _in("times", UTIMBUF))),
    _s(133, "mknod", _F.FS, (_PATHNAME, _mode(), _mknod_dev(1))),
    _s(134, "uselib", _F.MEMORY, (_path("library"),), sensitive=True),
    _s(135, "personality", _F.PROCESS, (_hex("persona", wide=False),), Ret(RetKind.ENUM, abi.Personality),
       sensitive=True),
    _s(136, "ustat", _F.FS, (_dev(), _out("ubuf", USTAT))),
    _s(137, "statfs", _F.FS, (_path("path"), _out("buf", STATFS))),
    _s(138, "fstatfs", _F.FILE, (_FD, _out("buf", STATFS))),
    _s(139, "sysfs", _F.SYSTEM, (_int("option"), _opaque("arg1"), _opaque("arg2"))),
    _s(140, "getpriority", _F.SCHED, (_enum("which", abi.PriorityWhich), _int("who"))),
    _s(141, "setpriority", _F.SCHED, (_enum("which", abi.PriorityWhich), _int("who"), _int("prio")), sensitive=True),
    _s(142, "sched_setparam", _F.SCHED, (_pid(), _in("param", SCHED_PARAM)), sensitive=True),
    _s(143, "sched_getparam", _F.SCHED, (_pid(), _out("param", SCHED_PARAM))),
    _s(144, "sched_setscheduler", _F.SCHED, (_pid(), _enum("policy", abi.SchedPolicy), _in("param", SCHED_PARAM)),
       sensitive=True),
    _s(145, "sched_getscheduler", _F.SCHED, (_pid(),), Ret(RetKind.ENUM, abi.SchedPolicy)),
    _s(146, "sched_get_priority_max", _F.SCHED, (_enum("policy", abi.SchedPolicy),)),
    _s(147, "sched_get_priority_min", _F.SCHED, (_enum("policy", abi.SchedPolicy),)),
    _s(148, "sched_rr_get_interval", _F.SCHED, (_pid(), _out("tp", TIMESPEC))),
    _s(149, "mlock", _F.MEMORY, (_addr(), _size("len")), sensitive=True),
    _s(150, "munlock", _F.MEMORY, (_addr(), _size("len")), sensitive=True),
    _s(151, "mlockall", _F.MEMORY, (_flags("flags", abi.MlockallFlags),), sensitive=True),
    _s(152, "munlockall", _F.MEMORY, _EMPTY, sensitive=True),
    _s(153, "vhangup", _F.SYSTEM, _EMPTY, sensitive=True),
    _s(154, "modify_ldt", _F.PROCESS, (_int("func"), _io("ptr", size=2), _size("bytecount")), sensitive=True),
    _s(155, "pivot_root", _F.MOUNT, (_path("new_root"), _path("put_old")), sensitive=True),
    _s(156, "_sysctl", _F.OBSOLETE, (_opaque("args"),)),
    _s(157, "prctl", _F.PROCESS, (_enum("option", abi.PrctlOption), _prctl_arg(1), _prctl_arg(2), _prctl_arg(3),
                                  _prctl_arg(4)),
       Dep(0, ((_PR.PR_GET_DUMPABLE, Ret(RetKind.ENUM, abi.SuidDump)),), R_INT), sensitive=True),
    _s(158, "arch_prctl", _F.PROCESS, (_enum("code", abi.ArchPrctlCode), _ARCH_PRCTL_ADDR), sensitive=True),
    _s(159, "adjtimex", _F.TIME, (_io("buf", TIMEX),)),
    _s(160, "setrlimit", _F.PROCESS, (_enum("resource", abi.RlimitResource), _in("rlim", RLIMIT)), sensitive=True),
    _s(161, "chroot", _F.FS, (_path("path"),), sensitive=True),
    _s(162, "sync", _F.FS),
    _s(163, "acct", _F.SYSTEM, (_path("filename"),), sensitive=True),
    _s(164, "settimeofday", _F.TIME, (_in("tv", TIMEVAL), _in("tz", TIMEZONE))),
    _s(165, "mount", _F.MOUNT, (_path("source"), _path("target"), _str("filesystemtype"), _hex("mountflags"),
                                _opaque("data")), sensitive=True),
    _s(166, "umount2", _F.MOUNT, (_path("target"), _hex("flags", wide=False)), sensitive=True),
    _s(167, "swapon", _F.SYSTEM, (_path("path"), _hex("swapflags", wide=False)), sensitive=True),
    _s(168, "swapoff", _F.SYSTEM, (_path("path"),), sensitive=True),
    _s(169, "reboot", _F.SYSTEM, (_hex("magic", wide=False), _hex("magic2", wide=False), _hex("cmd", wide=False),
                                  _opaque("arg")), sensitive=True),
    _s(170, "sethostname", _F.SYSTEM, (_in("name", size=1), _size("len"))),
    _s(171, "setdomainname", _F.SYSTEM, (_in("name", size=1), _size("len"))),
    _s(172, "iopl", _F.PROCESS, (_int("level"),), sensitive=True),
    _s(173, "ioperm", _F.PROCESS, (_size("from"), _size("num"), _int("turn_on")), sensitive=True),
    _s(174, "create_module", _F.OBSOLETE),
    _s(175, "init_module", _F.SYSTEM, (_in("module_image", size=1), _size("len"), _str("param_values")),
       sensitive=True),
    _s(176, "delete_module", _F.SYSTEM, (_str("name"), _hex("flags", wide=False)), sensitive=True),
    _s(177, "get_kernel_syms", _F.OBSOLETE),
    _s(178, "query_module", _F.OBSOLETE),
    _s(179, "quotactl", _F.FS, (_hex("cmd", wide=False), _path("special"), _int("id"), _opaque("addr"))),
    _s(180, "nfsservctl", _F.OBSOLETE),
    _s(181, "getpmsg", _F.OBSOLETE),
    _s(182, "putpmsg", _F.OBSOLETE),
    _s(183, "afs_syscall", _F.OBSOLETE),
    _s(184, "tuxcall", _F.OBSOLETE),
    _s(185, "security", _F.OBSOLETE),
    _s(186, "gettid", _F.PROCESS, _EMPTY, R_PID),
    _s(187, "readahead", _F.FILE, (_FD, _long("offset"), _size("count"))),
    _s(188, "setxattr", _F.FS, (_path("path"), _XATTR_NAME, _in("value", size=3), _size("size"),
                                _flags("flags", abi.XattrFlags))),
    _s(189, "lsetxattr", _F.FS, (_path("path"), _XATTR_NAME, _in("value", size=3), _size("size"),
                                 _flags("flags", abi.XattrFlags))),
    _s(190, "fsetxattr", _F.FILE, (_FD, _XATTR_NAME, _in("value", size=3), _size("size"),
                                   _flags("flags", abi.XattrFlags))),
    _s(191, "getxattr", _F.FS, (_path("path"), _XATTR_NAME, _whole(_out("value", size=3, from_ret=True)), _size("size"))),
    _s(192, "lgetxattr", _F.FS, (_path("path"), _XATTR_NAME, _whole(_out("value", size=3, from_ret=True)), _size("size"))),
    _s(193, "fgetxattr", _F.FILE, (_FD, _XATTR_NAME, _whole(_out("value", size=3, from_ret=True)), _size("size"))),
    _s(194, "listxattr", _F.FS, (_path("path"), _whole(_out("list", size=2, from_ret=True)), _size("size"))),
    _s(195, "llistxattr", _F.FS, (_path("path"), _whole(_out("list", size=2, from_ret=True)), _size("size"))),
    _s(196, "flistxattr", _F.FILE, (_FD, _whole(_out("list", size=2, from_ret=True)), _size("size"))),
    _s(197, "removexattr", _F.FS, (_path("path"), _XATTR_NAME)),
    _s(198, "lremovexattr", _F.FS, (_path("path"), _XATTR_NAME)),
    _s(199, "fremovexattr", _F.FILE, (_FD, _XATTR_NAME)),
    _s(200, "tkill", _F.SIGNAL, (_pid("tid"), _sig()), sensitive=True),
    _s(201, "time", _F.TIME, (_out("tloc", TIME_T),)),
    _s(202, "futex", _F.IPC, (_io("uaddr", FUTEX_WORD), _flags("futex_op", abi.FUTEX_OP), _futex_val(),
                              _futex_slot(0, _hex("timeout")), _futex_slot(1, _hex("uaddr2")),
                              _futex_slot(2, _hex("val3", wide=False)))),
    _s(203, "sched_setaffinity", _F.SCHED, (_pid(), _uint("cpusetsize"), _in("mask", CPU_SET, size=1)), sensitive=True),
    _s(204, "sched_getaffinity", _F.SCHED, (_pid(), _uint("cpusetsize"), _whole(_out("mask", CPU_SET, size=1, from_ret=True)))),
    _s(205, "set_thread_area", _F.PROCESS, (_io("u_info", USER_DESC),), sensitive=True),
    # AIO contexts are rings mapped into the caller and events carry user addresses.
    _s(206, "io_setup", _F.AIO, (_uint("nr_events"), _io("ctx_idp", ULONG)), sensitive=True),
    _s(207, "io_destroy", _F.AIO, (_hex("ctx_id"),), sensitive=True),
    _s(208, "io_getevents", _F.AIO, (_hex("ctx_id"), _long("min_nr"), _long("nr"),
                                     _out("events", IO_EVENT, count=2, from_ret=True), _in("timeout", TIMESPEC)),
       sensitive=True),
    _s(209, "io_submit", _F.AIO, (_hex("ctx_id"), _long("nr"), _opaque("iocbpp")), sensitive=True),
    _s(210, "io_cancel", _F.AIO, (_hex("ctx_id"), _opaque("iocb"), _out("result", IO_EVENT)), sensitive=True),
    _s(211, "get_thread_area", _F.PROCESS, (_io("u_info", USER_DESC),), sensitive=True),
    _s(212, "lookup_dcookie", _F.SYSTEM, (_hex("cookie"), _whole(_out("buffer", size=2, from_ret=True)), _size("len"))),
    _s(213, "epoll_create", _F.POLL, (_int("size"),), R_FD),
    _s(214, "epoll_ctl_old", _F.OBSOLETE),
    _s(215, "epoll_wait_old", _F.OBSOLETE),
    _s(216, "remap_file_pages", _F.MEMORY, (_addr(), _size("size"), _flags("prot", abi.PROT_FLAGS, wide=True),
                                            _size("pgoff"), _flags("flags", abi.MAP_FLAGS, wide=True)),
       sensitive=True),
    _s(217, "getdents64", _F.FILE, (_FD, _out("dirp", DIRENT64, size=2, from_ret=True), _uint("count"))),
    _s(218, "set_tid_address", _F.PROCESS, (_ptr("tidptr"),), R_PID, sensitive=True),
    _s(219, "restart_syscall", _F.SIGNAL, _EMPTY, sensitive=True),
    _s(220, "semtimedop", _F.IPC, (_int("semid"), _in("sops", SEMBUF, count=2), _size("nsops"),
                                   _in("timeout", TIMESPEC))),
    _s(221, "fadvise64", _F.FILE, (_FD, _long("offset"), _long("len"), _enum("advice", abi.FadviseAdvice))),
    # POSIX timers deliver signals to the calling process: emulated.
    _s(222, "timer_create", _F.TIME, (_CLOCKID, _in("sevp", SIGEVENT), _out("timerid", INT32)), sensitive=True),
    _s(223, "timer_settime", _F.TIME, (_int("timerid"), _flags("flags", abi.TimerFlags), _in("new_value", ITIMERSPEC),
                                       _out("old_value", ITIMERSPEC)), sensitive=True),
    _s(224, "timer_gettime", _F.TIME, (_int("timerid"), _out("curr_value", ITIMERSPEC)), sensitive=True),
    _s(225, "timer_getoverrun", _F.TIME, (_int("timerid"),), sensitive=True),
    _s(226, "timer_delete", _F.TIME, (_int("timerid"),), sensitive=True),
    _s(227, "clock_settime", _F.TIME, (_CLOCKID, _in("tp", TIMESPEC))),
    _s(228, "clock_gettime", _F.TIME, (_CLOCKID, _out("tp", TIMESPEC))),
    _s(229, "clock_getres", _F.TIME, (_CLOCKID, _out("res", TIMESPEC))),
    _s(230, "clock_nanosleep", _F.TIME, (_CLOCKID, _flags("flags", abi.TimerFlags), _in("request", TIMESPEC),
                                         _REMAINING_TIME("remain"))),
    _s(231, "exit_group", _F.PROCESS, (_int("status"),), R_NONE, sensitive=True),
    _s(232, "epoll_wait", _F.POLL, (_fd("epfd"), _EPOLL_EVENTS_OUT, _int("maxevents"), _int("timeout"))),
    _s(233, "epoll_ctl", _F.POLL, (_fd("epfd"), _enum("op", abi.EpollCtlOp), _FD, _in("event", EPOLL_EVENT))),
    _s(234, "tgkill", _F.SIGNAL, (_pid("tgid"), _pid("tid"), _sig()), sensitive=True),
    _s(235, "utimes", _F.FS, (_path("filename"), _in("times", TIMEVAL_PAIR))),
    _s(236, "vserver", _F.OBSOLETE),
    _s(237, "mbind", _F.MEMORY, (_addr(), _size("len"), _int("mode"), _in("nodemask", NODEMASK, count=4, per=64),
                                 _size("maxnode"), _hex("flags", wide=False)), sensitive=True),
    _s(238, "set_mempolicy", _F.MEMORY, (_int("mode"), _in("nodemask", NODEMASK, count=2, per=64), _size("maxnode")),
       sensitive=True),
    _s(239, "get_mempolicy", _F.MEMORY, (_out("mode", INT32), _out("nodemask", NODEMASK, count=2, per=64),
                                         _size("maxnode"), _addr(), _hex("flags", wide=False)), sensitive=True),
    _s(240, "mq_open", _F.IPC, (_str("name"), _OPEN_FLAGS, _open_mode(1),
                                _dep(1, {0: None}, _in("attr", MQ_ATTR), mask=abi.O_CREAT)), R_FD),
    _s(241, "mq_unlink", _F.IPC, (_str("name"),)),
    _s(242, "mq_timedsend", _F.IPC, (_fd("mqdes"), _in("msg_ptr", size=2), _size("msg_len"), _uint("msg_prio"),
                                     _in("abs_timeout", TIMESPEC))),
    _s(243, "mq_timedreceive", _F.IPC, (_fd("mqdes"), _out("msg_ptr", size=2, from_ret=True), _size("msg_len"),
                                        _out("msg_prio", UINT32), _in("abs_timeout", TIMESPEC))),
    _s(244, "mq_notify", _F.IPC, (_fd("mqdes"), _in("sevp", SIGEVENT)), sensitive=True),
    _s(245, "mq_getsetattr", _F.IPC, (_fd("mqdes"), _in("newattr", MQ_ATTR), _out("oldattr", MQ_ATTR))),
    _s(246, "kexec_load", _F.SYSTEM, (_hex("entry"), _size("nr_segments"), _opaque("segments"), _hex("flags")),
       sensitive=True),
    _s(247, "waitid", _F.PROCESS, (_enum("idtype", abi.IdType), _int("id"), _out("infop", SIGINFO),
                                   _flags("options", abi.WaitOptions), _out("rusage", RUSAGE)), sensitive=True),
    _s(248, "add_key", _F.SECURITY, (_str("type"), _str("description"), _in("payload", size=3), _size("plen"),
                                     _int("keyring"))),
    _s(249, "request_key", _F.SECURITY, (_str("type"), _str("description"), _str("callout_info"),
                                         _int("dest_keyring"))),
    _s(250, "keyctl", _F.SECURITY, (_int("operation"), _opaque("arg2"), _opaque("arg3"), _opaque("arg4"),
                                    _opaque("arg5"))),
    _s(251, "ioprio_set", _F.SCHED, (_int("which"), _int("who"), _int("ioprio")), sensitive=True),
    _s(252, "ioprio_get", _F.SCHED, (_int("which"), _int("who"))),
    _s(253, "inotify_init", _F.POLL, _EMPTY, R_FD),
    _s(254, "inotify_add_watch", _F.POLL, (_FD, _PATHNAME, _flags("mask", abi.InotifyMask))),
    _s(255, "inotify_rm_watch", _F.POLL, (_FD, _int("wd"))),
    _s(256, "migrate_pages", _F.MEMORY, (_pid(), _size("maxnode"), _in("old_nodes", NODEMASK, count=1, per=64),
                                         _in("new_nodes", NODEMASK, count=1, per=64)), sensitive=True),
    _s(257, "openat", _F.FS, (_dirfd(), _PATHNAME, _OPEN_FLAGS, _open_mode(2)), R_FD),
    _s(258, "mkdirat", _F.FS, (_dirfd(), _PATHNAME, _mode())),
    _s(259, "mknodat", _F.FS, (_dirfd(), _PATHNAME, _mode(), _mknod_dev(2))),
    _s(260, "fchownat", _F.FS, (_dirfd(), _PATHNAME, _OWNER, _GROUP, _AT_FLAGS)),
    _s(261, "futimesat", _F.FS, (_dirfd(), _PATHNAME, _in("times", TIMEVAL_PAIR))),
    _s(262, "newfstatat", _F.FS, (_dirfd(), _PATHNAME, _STATBUF, _AT_FLAGS)),
    _s(263, "unlinkat", _F.FS, (_dirfd(), _PATHNAME, _AT_FLAGS)),
    _s(264, "renameat", _F.FS, (_dirfd("olddirfd"), _path("oldpath"), _dirfd("newdirfd"), _path("newpath"))),
    _s(265, "linkat", _F.FS, (_dirfd("olddirfd"), _path("oldpath"), _dirfd("newdirfd"), _path("newpath"),
                              _AT_FLAGS)),
    _s(266, "symlinkat", _F.FS, (_str("target", Display.FULL_STRING), _dirfd("newdirfd"), _path("linkpath"))),
    _s(267, "readlinkat", _F.FS, (_dirfd(), _PATHNAME, _whole(_out("buf", size=3, from_ret=True)), _size("bufsiz"))),
    _s(268, "fchmodat", _F.FS, (_dirfd(), _PATHNAME, _mode())),
    _s(269, "faccessat", _F.FS, (_dirfd(), _PATHNAME, _flags("mode", abi.AccessMode))),
    _s(270, "pselect6", _F.POLL, (_int("nfds"), _io("readfds", FD_SET, count=0, per=64),
                                  _io("writefds", FD_SET, count=0, per=64), _io("exceptfds", FD_SET, count=0, per=64),
                                  _io("timeout", TIMESPEC), _in("sigmask", SIGSET_ARGPACK))),
    _s(271, "ppoll", _F.POLL, (_io("fds", POLLFD, count=1), _uint("nfds"), _io("tmo_p", TIMESPEC),
                               _in("sigmask", SIGSET, size=4), _SIGSETSIZE)),
    _s(272, "unshare", _F.PROCESS, (_flags("flags", abi.UNSHARE_FLAGS, wide=True),), sensitive=True),
    _s(273, "set_robust_list", _F.PROCESS, (_ptr("head"), _size("len")), sensitive=True),
    _s(274, "get_robust_list", _F.PROCESS, (_pid(), _out("head_ptr", ULONG), _out("len_ptr", ULONG)), sensitive=True),
    _s(275, "splice", _F.FILE, (_fd("fd_in"), _io("off_in", LOFF), _fd("fd_out"), _io("off_out", LOFF), _size("len"),
                                _hex("flags", wide=False))),
    _s(276, "tee", _F.FILE, (_fd("fd_in"), _fd("fd_out"), _size("len"), _hex("flags", wide=False))),
    _s(277, "sync_file_range", _F.FILE, (_FD, _long("offset"), _long("nbytes"), _hex("flags", wide=False))),
    _s(278, "vmsplice", _F.FILE, (_FD, _iov("iov", 2, _IN), _size("nr_segs"), _hex("flags", wide=False))),
    _s(279, "move_pages", _F.MEMORY, (_pid(), _size("count"), _in("pages", ULONG, count=1),
                                      _in("nodes", INT32, count=1), _out("status", INT32, count=1),
                                      _hex("flags", wide=False)), sensitive=True),
    _s(280, "utimensat", _F.FS, (_dirfd(), _PATHNAME, _in("times", TIMESPEC_PAIR), _AT_FLAGS)),
    _s(281, "epoll_pwait", _F.POLL, (_fd("epfd"), _EPOLL_EVENTS_OUT, _int("maxevents"), _int("timeout"),
                                     _in("sigmask", SIGSET, size=5), _SIGSETSIZE)),
    _s(282, "signalfd", _F.SIGNAL, (_FD, _in("mask", SIGSET, size=2), _size("sizemask")), R_FD),
    _s(283, "timerfd_create", _F.TIME, (_CLOCKID, _flags("flags", abi.TimerfdCreateFlags)), R_FD),
    _s(284, "eventfd", _F.POLL, (_uint("initval"),), R_FD),
    _s(285, "fallocate", _F.FILE, (_FD, _hex("mode", wide=False), _long("offset"), _long("len"))),
    _s(286, "timerfd_settime", _F.TIME, (_FD, _flags("flags", abi.TimerfdFlags), _in("new_value", ITIMERSPEC),
                                         _out("old_value", ITIMERSPEC))),
    _s(287, "timerfd_gettime", _F.TIME, (_FD, _out("curr_value", ITIMERSPEC))),
    _s(288, "accept4", _F.NET, (_fd("sockfd"), _sockaddr_out("addr", 2), _socklen(),
                                _flags("flags", abi.SocketFlags)), R_FD),
    _s(289, "signalfd4", _F.SIGNAL, (_FD, _in("mask", SIGSET, size=2), _size("sizemask"),
                                     _flags("flags", abi.SignalfdFlags)), R_FD),
    _s(290, "eventfd2", _F.POLL, (_uint("initval"), _flags("flags", abi.EventfdFlags)), R_FD),
    _s(291, "epoll_create1", _F.POLL, (_flags("flags", abi.EpollFlags),), R_FD),
    _s(292, "dup3", _F.FILE, (_fd("oldfd"), _fd("newfd"), _flags("flags", abi.OPEN_BITS)), R_FD),
    _s(293, "pipe2", _F.FILE, (_out("pipefd", FD_PAIR), _flags("flags", abi.OPEN_BITS))),
    _s(294, "inotify_init1", _F.POLL, (_flags("flags", abi.InotifyInitFlags),), R_FD),
    # pos_h is the high half of the offset on 32-bit ABIs; x86-64 ignores it and strace hides it.
    _s(295, "preadv", _F.FILE, (_FD, _iov("iov", 2, _OUT), _int("iovcnt"), _long("offset"),
                                _hidden(_size("pos_h")))),
    _s(296, "pwritev", _F.FILE, (_FD, _iov("iov", 2, _IN), _int("iovcnt"), _long("offset"),
                                 _hidden(_size("pos_h")))),
    _s(297, "rt_tgsigqueueinfo", _F.SIGNAL, (_pid("tgid"), _pid("tid"), _sig(), _in("info", SIGINFO)),
       sensitive=True),
    _s(298, "perf_event_open", _F.SYSTEM, (_opaque("attr"), _pid(), _int("cpu"), _fd("group_fd"),
                                           _hex("flags")), R_FD, sensitive=True),
    _s(299, "recvmmsg", _F.NET, (_fd("sockfd"), _io("msgvec", MMSGHDR, count=2), _uint("vlen"), _MSG_FLAGS,
                                 _io("timeout", TIMESPEC))),
    _s(300, "fanotify_init", _F.POLL, (_hex("flags", wide=False), _flags("event_f_flags", abi.OPEN_FLAGS)), R_FD),
    _s(301, "fanotify_mark", _F.POLL, (_fd("fanotify_fd"), _hex("flags", wide=False), _hex("mask"), _dirfd(),
                                       _PATHNAME)),
    _s(302, "prlimit64", _F.PROCESS, (_pid(), _enum("resource", abi.RlimitResource), _in("new_limit", RLIMIT),
                                      _out("old_limit", RLIMIT)), sensitive=True),
    # struct file_handle carries its own length (handle_bytes).
    _s(303, "name_to_handle_at", _F.FS, (_dirfd(), _PATHNAME, _opaque("handle"), _out("mount_id", INT32),
                                         _AT_FLAGS)),
    _s(304, "open_by_handle_at", _F.FS, (_fd("mount_fd"), _opaque("handle"), _OPEN_FLAGS), R_FD),
    _s(305, "clock_adjtime", _F.TIME, (_CLOCKID, _io("buf", TIMEX))),
    _s(306, "syncfs", _F.FILE, (_FD,)),
    _s(307, "sendmmsg", _F.NET, (_fd("sockfd"), _io("msgvec", MMSGHDR, count=2), _uint("vlen"), _MSG_FLAGS)),
    _s(308, "setns", _F.PROCESS, (_FD, _flags("nstype", abi.UNSHARE_FLAGS)), sensitive=True),
    _s(309, "getcpu", _F.SCHED, (_out("cpu", UINT32), _out("node", UINT32), _ptr("tcache"))),
    # remote_iov names addresses in another process: never translated as ours.
    _s(310, "process_vm_readv", _F.PROCESS, (_pid(), _iov("local_iov", 2, _OUT), _size("liovcnt"),
                                             _opaque("remote_iov"), _size("riovcnt"), _size("flags")), sensitive=True),
    _s(311, "process_vm_writev", _F.PROCESS, (_pid(), _iov("local_iov", 2, _IN), _size("liovcnt"),
                                              _opaque("remote_iov"), _size("riovcnt"), _size("flags")), sensitive=True),
    _s(312, "kcmp", _F.PROCESS, (_pid("pid1"), _pid("pid2"), _int("type"), _size("idx1"), _size("idx2")),
       sensitive=True),
    _s(313, "finit_module", _F.SYSTEM, (_FD, _str("param_values"), _hex("flags", wide=False)), sensitive=True),
    # struct sched_attr carries its own size field.
    _s(314, "sched_setattr", _F.SCHED, (_pid(), _opaque("attr"), _uint("flags")), sensitive=True),
    _s(315, "sched_getattr", _F.SCHED, (_pid(), _out("attr", SCHED_ATTR, size=2), _uint("size"), _uint("flags"))),
    _s(316, "renameat2", _F.FS, (_dirfd("olddirfd"), _path("oldpath"), _dirfd("newdirfd"), _path("newpath"),
                                 _flags("flags", abi.RenameFlags))),
    _s(317, "seccomp", _F.SECURITY, (_uint("operation"), _hex("flags", wide=False), _opaque("args")), sensitive=True),
    _s(318, "getrandom", _F.SYSTEM, (_out("buf", size=1, from_ret=True, display=Display.HEX_STRING), _size("buflen"),
                                     _flags("flags", abi.GrndFlags))),
    _s(319, "memfd_create", _F.MEMORY, (_str("name"), _flags("flags", abi.MemfdFlags)), R_FD),
    _s(320, "kexec_file_load", _F.SYSTEM, (_fd("kernel_fd"), _fd("initrd_fd"), _size("cmdline_len"),
                                           _in("cmdline", size=2), _hex("flags")), sensitive=True),
    _s(321, "bpf", _F.SECURITY, (_int("cmd"), _opaque("attr"), _uint("size")), R_FD, sensitive=True),
    _s(322, "execveat", _F.PROCESS, (_dirfd(), _PATHNAME, _argv("argv"), _argv("envp", Display.ENV_COUNT),
                                     _AT_FLAGS), sensitive=True),
    _s(323, "userfaultfd", _F.MEMORY, (_flags("flags", abi.OPEN_BITS),), R_FD, sensitive=True),
    _s(324, "membarrier", _F.SCHED, (_int("cmd"), _uint("flags"), _int("cpu_id")), sensitive=True),
    _s(325, "mlock2", _F.MEMORY, (_addr(), _size("len"), _flags("flags", abi.MlockFlags)), sensitive=True),
    _s(326, "copy_file_range", _F.FILE, (_fd("fd_in"), _io("off_in", LOFF), _fd("fd_out"), _io("off_out", LOFF),
                                         _size("len"), _uint("flags"))),
    _s(327, "preadv2", _F.FILE, (_FD, _iov("iov", 2, _OUT), _int("iovcnt"), _long("offset"),
                                 _hidden(_size("pos_h")), _RWF)),
    _s(328, "pwritev2", _F.FILE, (_FD, _iov("iov", 2, _IN), _int("iovcnt"), _long("offset"),
                                  _hidden(_size("pos_h")), _RWF)),
    _s(329, "pkey_mprotect", _F.MEMORY, (_addr(), _size("len"), _flags("prot", abi.PROT_FLAGS, wide=True),
                                         _int("pkey")), sensitive=True),
    _s(330, "pkey_alloc", _F.MEMORY, (_uint("flags"), _hex("access_rights", wide=False)), sensitive=True),
    _s(331, "pkey_free", _F.MEMORY, (_int("pkey"),), sensitive=True),
    _s(332, "statx", _F.FS, (_dirfd(), _PATHNAME, _flags("flags", abi.STATX_FLAGS), _flags("mask", abi.StatxMask),
                             _out("statxbuf", STATX))),
    _s(333, "io_pgetevents", _F.AIO, (_hex("ctx_id"), _long("min_nr"), _long("nr"),
                                      _out("events", IO_EVENT, count=2, from_ret=True), _in("timeout", TIMESPEC),
                                      _in("usig", SIGSET_ARGPACK)), sensitive=True),
    # The kernel keeps the rseq area's address and writes it on every preemption.
    _s(334, "rseq", _F.SCHED, (_ptr("rseq"), _uint("rseq_len"), _int("flags"), _hex("sig", wide=False)),
       sensitive=True),
    _s(335, "uretprobe", _F.PROCESS, _EMPTY, sensitive=True),
    _s(336, "uprobe", _F.PROCESS, _EMPTY, sensitive=True),
    _s(424, "pidfd_send_signal", _F.SIGNAL, (_fd("pidfd"), _sig(), _in("info", SIGINFO), _uint("flags"))),
    # io_uring rings are shared with the kernel and their entries carry user addresses.
    _s(425, "io_uring_setup", _F.AIO, (_uint("entries"), _io("p", IO_URING_PARAMS)), R_FD, sensitive=True),
    _s(426, "io_uring_enter", _F.AIO, (_FD, _uint("to_submit"), _uint("min_complete"), _hex("flags", wide=False),
                                       _opaque("argp"), _size("argsz")), sensitive=True),
    _s(427, "io_uring_register", _F.AIO, (_FD, _uint("opcode"), _opaque("arg"), _uint("nr_args")), sensitive=True),
    _s(428, "open_tree", _F.MOUNT, (_dirfd(), _path("path"), _hex("flags", wide=False)), R_FD, sensitive=True),
    _s(429, "move_mount", _F.MOUNT, (_dirfd("from_dirfd"), _path("from_path"), _dirfd("to_dirfd"), _path("to_path"),
                                     _hex("flags", wide=False)), sensitive=True),
    _s(430, "fsopen", _F.MOUNT, (_str("fsname"), _hex("flags", wide=False)), R_FD, sensitive=True),
    _s(431, "fsconfig", _F.MOUNT, (_FD, _uint("cmd"), _str("key"), _opaque("value"), _int("aux")), sensitive=True),
    _s(432, "fsmount", _F.MOUNT, (_fd("fs_fd"), _hex("flags", wide=False), _hex("attr_flags", wide=False)), R_FD,
       sensitive=True),
    _s(433, "fspick", _F.MOUNT, (_dirfd(), _path("path"), _hex("flags", wide=False)), R_FD, sensitive=True),
    _s(434, "pidfd_open", _F.PROCESS, (_pid(), _uint("flags")), R_FD, sensitive=True),
    _s(435, "clone3", _F.PROCESS, (_in("cl_args", CLONE_ARGS, size=1), _size("size")), R_PID, sensitive=True),
    # close_range(0, ~0U) would close the VMM's own descriptors.
    _s(436, "close_range", _F.FILE, (_uint("first"), _uint("last"), _flags("flags", abi.CloseRangeFlags)),
       sensitive=True),
    _s(437, "openat2", _F.FS, (_dirfd(), _PATHNAME, _in("how", OPEN_HOW, size=3), _size("size")), R_FD),
    _s(438, "pidfd_getfd", _F.PROCESS, (_fd("pidfd"), _int("targetfd"), _uint("flags")), R_FD, sensitive=True),
    _s(439, "faccessat2", _F.FS, (_dirfd(), _PATHNAME, _flags("mode", abi.AccessMode),
                                  _flags("flags", abi.ACCESSAT_FLAGS))),
    _s(440, "process_madvise", _F.MEMORY, (_fd("pidfd"), _opaque("iovec"), _size("vlen"),
                                           _enum("advice", abi.MadviseAdvice), _uint("flags")), sensitive=True),
    _s(441, "epoll_pwait2", _F.POLL, (_fd("epfd"), _EPOLL_EVENTS_OUT, _int("maxevents"), _in("timeout", TIMESPEC),
                                      _in("sigmask", SIGSET, size=5), _SIGSETSIZE)),
    _s(442, "mount_setattr", _F.MOUNT, (_dirfd(), _path("path"), _hex("flags", wide=False),
                                        _in("attr", MOUNT_ATTR, size=4), _size("size")), sensitive=True),
    _s(443, "quotactl_fd", _F.FS, (_FD, _hex("cmd", wide=False), _int("id"), _opaque("addr"))),
    _s(444, "landlock_create_ruleset", _F.SECURITY, (_in("attr", size=1), _size("size"), _uint("flags")), R_FD),
    _s(445, "landlock_add_rule", _F.SECURITY, (_fd("ruleset_fd"), _int("rule_type"), _opaque("rule_attr"),
                                               _uint("flags"))),
    _s(446, "landlock_restrict_self", _F.SECURITY, (_fd("ruleset_fd"), _uint("flags")), sensitive=True),
    _s(447, "memfd_secret", _F.MEMORY, (_uint("flags"),), R_FD, sensitive=True),
    _s(448, "process_mrelease", _F.MEMORY, (_fd("pidfd"), _uint("flags"))),
    _s(449, "futex_waitv", _F.IPC, (_in("waiters", FUTEX_WAITV, count=1), _uint("nr_futexes"), _uint("flags"),
                                    _in("timeout", TIMESPEC), _CLOCKID)),
    _s(450, "set_mempolicy_home_node", _F.MEMORY, (_addr("start"), _size("len"), _size("home_node"), _size("flags")),
       sensitive=True),
    _s(451, "cachestat", _F.FILE, (_FD, _in("cstat_range", CACHESTAT_RANGE), _out("cstat", CACHESTAT),
                                   _uint("flags"))),
    _s(452, "fchmodat2", _F.FS, (_dirfd(), _PATHNAME, _mode(), _AT_FLAGS)),
    _s(453, "map_shadow_stack", _F.MEMORY, (_addr(), _size("size"), _uint("flags")), R_HEX, sensitive=True),
    _s(454, "futex_wake", _F.IPC, (_io("uaddr", FUTEX_WORD), _hex("mask"), _int("nr"), _uint("flags"))),
    _s(455, "futex_wait", _F.IPC, (_io("uaddr", FUTEX_WORD), _hex("val"), _hex("mask"), _uint("flags"),
                                   _in("timeout", TIMESPEC), _CLOCKID)),
    _s(456, "futex_requeue", _F.IPC, (_in("waiters", Struct("futex_waitv[2]", 48, has_pointers=True)),
                                      _uint("flags"), _int("nr_wake"), _int("nr_requeue"))),
    _s(457, "statmount", _F.MOUNT, (_in("req", MNT_ID_REQ), _out("buf", size=2), _size("bufsize"), _uint("flags"))),
    _s(458, "listmount", _F.MOUNT, (_in("req", MNT_ID_REQ), _out("mnt_ids", U64, count=2, from_ret=True),
                                    _size("nr_mnt_ids"), _uint("flags"))),
    _s(459, "lsm_get_self_attr", _F.SECURITY, (_uint("attr"), _out("ctx", size_ptr=2), _io("size", UINT32),
                                               _uint("flags"))),
    _s(460, "lsm_set_self_attr", _F.SECURITY, (_uint("attr"), _in("ctx", size=2), _uint("size"), _uint("flags")),
       sensitive=True),
    _s(461, "lsm_list_modules", _F.SECURITY, (_out("ids", size_ptr=1), _io("size", UINT32), _uint("flags"))),
    _s(462, "mseal", _F.MEMORY, (_addr(), _size("len"), _size("flags")), sensitive=True),
    _s(463, "setxattrat", _F.FS, (_dirfd(), _PATHNAME, _flags("at_flags", abi.AT_FLAGS), _XATTR_NAME,
                                  _in("uargs", XATTR_ARGS, size=5), _size("usize"))),
    _s(464, "getxattrat", _F.FS, (_dirfd(), _PATHNAME, _flags("at_flags", abi.AT_FLAGS), _XATTR_NAME,
                                  _io("uargs", XATTR_ARGS, size=5), _size("usize"))),
    _s(465, "listxattrat", _F.FS, (_dirfd(), _PATHNAME, _flags("at_flags", abi.AT_FLAGS),
                                   _out("list", size=4, from_ret=True), _size("size"))),
    _s(466, "removexattrat", _F.FS, (_dirfd(), _PATHNAME, _flags("at_flags", abi.AT_FLAGS), _XATTR_NAME)),
    _s(467, "open_tree_attr", _F.MOUNT, (_dirfd(), _path("path"), _hex("flags", wide=False),
                                         _in("attr", MOUNT_ATTR, size=4), _size("size")), R_FD, sensitive=True),
    _s(468, "file_getattr", _F.FS, (_dirfd(), _PATHNAME, _out("ufattr", FILE_ATTR, size=3), _size("usize"),
                                    _AT_FLAGS)),
    _s(469, "file_setattr", _F.FS, (_dirfd(), _PATHNAME, _in("ufattr", FILE_ATTR, size=3), _size("usize"),
                                    _AT_FLAGS)),
)
# fmt: on

SYSCALLS: Final[Mapping[int, SyscallSpec]] = MappingProxyType({spec.number: spec for spec in _TABLE})
BY_NAME: Final[Mapping[str, SyscallSpec]] = MappingProxyType({spec.name: spec for spec in _TABLE})
#: System call numbers by name (``Sysno.kill == 62``): code that makes a host call
#: names it, never writes its number.
Sysno = enum.IntEnum("Sysno", {spec.name: spec.number for spec in _TABLE})


def lookup(number: int) -> SyscallSpec | None:
    """The declaration of system call ``number``, or None (the kernel says ENOSYS)."""
    return SYSCALLS.get(number)


def unknown_spec(number: int) -> SyscallSpec:
    """A stand-in for an undeclared number: six hex arguments, as strace shows them."""
    return SyscallSpec(
        number, f"syscall_{number:#x}", tuple(_hex(f"arg{i}") for i in range(6)), R_INT, Family.OBSOLETE, True
    )
