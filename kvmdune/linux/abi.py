"""Linux x86-64 ABI constants, named as in the kernel's uapi headers.

Owns the numbers a guest passes in registers and structures: errno values,
signal numbers, and the flag words and enumerations that system calls take
(open flags, mmap PROT_*/MAP_*, AT_*, CLONE_*, wait options, fcntl commands,
socket families and types, terminal ioctls, arch_prctl codes, madvise
advice, futex operations, ...).  Values are transcribed from the headers in
/usr/include (``asm-generic/*.h``, ``linux/*.h``, ``x86_64-linux-gnu/asm``
and ``bits``); ``tests/linux/test_abi.py`` checks a sample against a C
compiler.

Also owns :class:`FlagSet`, the description of how a flags word splits into
an enumerated field and single bits.  How a value is spelled for a human
(``O_RDONLY|O_CLOEXEC``) lives in :mod:`kvmdune.linux.strace`; which call
takes which table lives in :mod:`kvmdune.linux.syscall_table`.

Members are declared in the order strace prints them: a flags word is
decomposed by walking the members in declaration order, so a multi-bit name
(``O_SYNC``) must come before the single bits it contains (``O_DSYNC``).
Kernel names that begin with ``__`` (``__WALL``, ``__O_TMPFILE``) are legal
only through the functional enum API, because a class body would mangle them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Mapping

# Python 3.11's EnumType spends some 20 us on each member it creates, and the
# ~900 members below are built by every kvmdune command before it starts. The
# decorator the standard library uses for its own enums (enum._simple_enum)
# builds the same classes -- enum._test_simple_enum finds no difference -- in
# under half the time. Class bodies are written as usual; the decorator names
# the kind.
_int_enum = enum._simple_enum(enum.IntEnum)
_int_flag = enum._simple_enum(enum.IntFlag)


@_int_enum
class Errno:
    """errno values (asm-generic/errno-base.h, asm-generic/errno.h); aliases follow their target."""

    EPERM = 1
    ENOENT = 2
    ESRCH = 3
    EINTR = 4
    EIO = 5
    ENXIO = 6
    E2BIG = 7
    ENOEXEC = 8
    EBADF = 9
    ECHILD = 10
    EAGAIN = 11
    ENOMEM = 12
    EACCES = 13
    EFAULT = 14
    ENOTBLK = 15
    EBUSY = 16
    EEXIST = 17
    EXDEV = 18
    ENODEV = 19
    ENOTDIR = 20
    EISDIR = 21
    EINVAL = 22
    ENFILE = 23
    EMFILE = 24
    ENOTTY = 25
    ETXTBSY = 26
    EFBIG = 27
    ENOSPC = 28
    ESPIPE = 29
    EROFS = 30
    EMLINK = 31
    EPIPE = 32
    EDOM = 33
    ERANGE = 34
    EDEADLK = 35
    ENAMETOOLONG = 36
    ENOLCK = 37
    ENOSYS = 38
    ENOTEMPTY = 39
    ELOOP = 40
    EWOULDBLOCK = EAGAIN
    ENOMSG = 42
    EIDRM = 43
    ECHRNG = 44
    EL2NSYNC = 45
    EL3HLT = 46
    EL3RST = 47
    ELNRNG = 48
    EUNATCH = 49
    ENOCSI = 50
    EL2HLT = 51
    EBADE = 52
    EBADR = 53
    EXFULL = 54
    ENOANO = 55
    EBADRQC = 56
    EBADSLT = 57
    EDEADLOCK = EDEADLK
    EBFONT = 59
    ENOSTR = 60
    ENODATA = 61
    ETIME = 62
    ENOSR = 63
    ENONET = 64
    ENOPKG = 65
    EREMOTE = 66
    ENOLINK = 67
    EADV = 68
    ESRMNT = 69
    ECOMM = 70
    EPROTO = 71
    EMULTIHOP = 72
    EDOTDOT = 73
    EBADMSG = 74
    EOVERFLOW = 75
    ENOTUNIQ = 76
    EBADFD = 77
    EREMCHG = 78
    ELIBACC = 79
    ELIBBAD = 80
    ELIBSCN = 81
    ELIBMAX = 82
    ELIBEXEC = 83
    EILSEQ = 84
    ERESTART = 85
    ESTRPIPE = 86
    EUSERS = 87
    ENOTSOCK = 88
    EDESTADDRREQ = 89
    EMSGSIZE = 90
    EPROTOTYPE = 91
    ENOPROTOOPT = 92
    EPROTONOSUPPORT = 93
    ESOCKTNOSUPPORT = 94
    EOPNOTSUPP = 95
    EPFNOSUPPORT = 96
    EAFNOSUPPORT = 97
    EADDRINUSE = 98
    EADDRNOTAVAIL = 99
    ENETDOWN = 100
    ENETUNREACH = 101
    ENETRESET = 102
    ECONNABORTED = 103
    ECONNRESET = 104
    ENOBUFS = 105
    EISCONN = 106
    ENOTCONN = 107
    ESHUTDOWN = 108
    ETOOMANYREFS = 109
    ETIMEDOUT = 110
    ECONNREFUSED = 111
    EHOSTDOWN = 112
    EHOSTUNREACH = 113
    EALREADY = 114
    EINPROGRESS = 115
    ESTALE = 116
    EUCLEAN = 117
    ENOTNAM = 118
    ENAVAIL = 119
    EISNAM = 120
    EREMOTEIO = 121
    EDQUOT = 122
    ENOMEDIUM = 123
    EMEDIUMTYPE = 124
    ECANCELED = 125
    ENOKEY = 126
    EKEYEXPIRED = 127
    EKEYREVOKED = 128
    EKEYREJECTED = 129
    EOWNERDEAD = 130
    ENOTRECOVERABLE = 131
    ERFKILL = 132
    EHWPOISON = 133

# strerror(3) texts as glibc spells them, which is what strace prints after the name.
ERRNO_MESSAGES: Final[Mapping[int, str]] = MappingProxyType({
    1: 'Operation not permitted',
    2: 'No such file or directory',
    3: 'No such process',
    4: 'Interrupted system call',
    5: 'Input/output error',
    6: 'No such device or address',
    7: 'Argument list too long',
    8: 'Exec format error',
    9: 'Bad file descriptor',
    10: 'No child processes',
    11: 'Resource temporarily unavailable',
    12: 'Cannot allocate memory',
    13: 'Permission denied',
    14: 'Bad address',
    15: 'Block device required',
    16: 'Device or resource busy',
    17: 'File exists',
    18: 'Invalid cross-device link',
    19: 'No such device',
    20: 'Not a directory',
    21: 'Is a directory',
    22: 'Invalid argument',
    23: 'Too many open files in system',
    24: 'Too many open files',
    25: 'Inappropriate ioctl for device',
    26: 'Text file busy',
    27: 'File too large',
    28: 'No space left on device',
    29: 'Illegal seek',
    30: 'Read-only file system',
    31: 'Too many links',
    32: 'Broken pipe',
    33: 'Numerical argument out of domain',
    34: 'Numerical result out of range',
    35: 'Resource deadlock avoided',
    36: 'File name too long',
    37: 'No locks available',
    38: 'Function not implemented',
    39: 'Directory not empty',
    40: 'Too many levels of symbolic links',
    42: 'No message of desired type',
    43: 'Identifier removed',
    44: 'Channel number out of range',
    45: 'Level 2 not synchronized',
    46: 'Level 3 halted',
    47: 'Level 3 reset',
    48: 'Link number out of range',
    49: 'Protocol driver not attached',
    50: 'No CSI structure available',
    51: 'Level 2 halted',
    52: 'Invalid exchange',
    53: 'Invalid request descriptor',
    54: 'Exchange full',
    55: 'No anode',
    56: 'Invalid request code',
    57: 'Invalid slot',
    59: 'Bad font file format',
    60: 'Device not a stream',
    61: 'No data available',
    62: 'Timer expired',
    63: 'Out of streams resources',
    64: 'Machine is not on the network',
    65: 'Package not installed',
    66: 'Object is remote',
    67: 'Link has been severed',
    68: 'Advertise error',
    69: 'Srmount error',
    70: 'Communication error on send',
    71: 'Protocol error',
    72: 'Multihop attempted',
    73: 'RFS specific error',
    74: 'Bad message',
    75: 'Value too large for defined data type',
    76: 'Name not unique on network',
    77: 'File descriptor in bad state',
    78: 'Remote address changed',
    79: 'Can not access a needed shared library',
    80: 'Accessing a corrupted shared library',
    81: '.lib section in a.out corrupted',
    82: 'Attempting to link in too many shared libraries',
    83: 'Cannot exec a shared library directly',
    84: 'Invalid or incomplete multibyte or wide character',
    85: 'Interrupted system call should be restarted',
    86: 'Streams pipe error',
    87: 'Too many users',
    88: 'Socket operation on non-socket',
    89: 'Destination address required',
    90: 'Message too long',
    91: 'Protocol wrong type for socket',
    92: 'Protocol not available',
    93: 'Protocol not supported',
    94: 'Socket type not supported',
    95: 'Operation not supported',
    96: 'Protocol family not supported',
    97: 'Address family not supported by protocol',
    98: 'Address already in use',
    99: 'Cannot assign requested address',
    100: 'Network is down',
    101: 'Network is unreachable',
    102: 'Network dropped connection on reset',
    103: 'Software caused connection abort',
    104: 'Connection reset by peer',
    105: 'No buffer space available',
    106: 'Transport endpoint is already connected',
    107: 'Transport endpoint is not connected',
    108: 'Cannot send after transport endpoint shutdown',
    109: 'Too many references: cannot splice',
    110: 'Connection timed out',
    111: 'Connection refused',
    112: 'Host is down',
    113: 'No route to host',
    114: 'Operation already in progress',
    115: 'Operation now in progress',
    116: 'Stale file handle',
    117: 'Structure needs cleaning',
    118: 'Not a XENIX named type file',
    119: 'No XENIX semaphores available',
    120: 'Is a named type file',
    121: 'Remote I/O error',
    122: 'Disk quota exceeded',
    123: 'No medium found',
    124: 'Wrong medium type',
    125: 'Operation canceled',
    126: 'Required key not available',
    127: 'Key has expired',
    128: 'Key has been revoked',
    129: 'Key was rejected by service',
    130: 'Owner died',
    131: 'State not recoverable',
    132: 'Operation not possible due to RF-kill',
    133: 'Memory page has hardware error',
})


def errno_name(value: int) -> str | None:
    """The canonical name of an errno value (``2`` -> ``"ENOENT"``), or None."""
    try:
        return Errno(value).name
    except ValueError:
        return None


def errno_message(value: int) -> str:
    """strerror(3) text for an errno value, as glibc words it."""
    return ERRNO_MESSAGES.get(value, f"Unknown error {value}")


# Highest errno a system call can return: the kernel's MAX_ERRNO.  A raw
# return value in [-MAX_ERRNO, -1] is an error, anything else a result.
MAX_ERRNO: Final = 4095


# --- signals (asm/signal.h) -------------------------------------------------


@_int_enum
class Signal:
    """Standard signals; real-time signals SIGRTMIN..SIGRTMAX are plain ints."""

    SIGHUP = 1
    SIGINT = 2
    SIGQUIT = 3
    SIGILL = 4
    SIGTRAP = 5
    SIGABRT = 6
    SIGIOT = 6
    SIGBUS = 7
    SIGFPE = 8
    SIGKILL = 9
    SIGUSR1 = 10
    SIGSEGV = 11
    SIGUSR2 = 12
    SIGPIPE = 13
    SIGALRM = 14
    SIGTERM = 15
    SIGSTKFLT = 16
    SIGCHLD = 17
    SIGCONT = 18
    SIGSTOP = 19
    SIGTSTP = 20
    SIGTTIN = 21
    SIGTTOU = 22
    SIGURG = 23
    SIGXCPU = 24
    SIGXFSZ = 25
    SIGVTALRM = 26
    SIGPROF = 27
    SIGWINCH = 28
    SIGIO = 29
    SIGPOLL = 29
    SIGPWR = 30
    SIGSYS = 31


SIGRTMIN: Final = 32
SIGRTMAX: Final = 64
NSIG: Final = 65  # _NSIG + 1: signal numbers are 1..64


@_int_enum
class BusCode:
    """si_code values of SIGBUS (asm-generic/siginfo.h)."""

    BUS_ADRALN = 1      # misaligned address
    BUS_ADRERR = 2      # no object behind the address (a file mapping past its end)
    BUS_OBJERR = 3      # a hardware error of the object


def signal_name(value: int) -> str | None:
    """Name of a signal number as strace spells it, or None if out of range.

    Real-time signals are ``SIGRTMIN`` and ``SIGRT_<n>`` for SIGRTMIN+n, the
    kernel's numbering rather than glibc's (glibc reserves the first two).
    """
    if SIGRTMIN <= value <= SIGRTMAX:
        return "SIGRTMIN" if value == SIGRTMIN else f"SIGRT_{value - SIGRTMIN}"
    try:
        return Signal(value).name
    except ValueError:
        return None


@_int_enum
class SigprocmaskHow:
    """rt_sigprocmask(2) ``how`` (asm-generic/signal-defs.h)."""

    SIG_BLOCK = 0
    SIG_UNBLOCK = 1
    SIG_SETMASK = 2


@_int_flag
class SigactionFlags:
    """``sa_flags`` of the kernel's struct sigaction (asm/signal.h)."""

    SA_NOCLDSTOP = 0x00000001
    SA_NOCLDWAIT = 0x00000002
    SA_SIGINFO = 0x00000004
    SA_UNSUPPORTED = 0x00000400
    SA_EXPOSE_TAGBITS = 0x00000800
    SA_RESTORER = 0x04000000
    SA_ONSTACK = 0x08000000
    SA_RESTART = 0x10000000
    SA_NODEFER = 0x40000000
    SA_RESETHAND = 0x80000000


@_int_enum
class SigHandler:
    """The special ``sa_handler`` values (asm-generic/signal-defs.h)."""

    SIG_DFL = 0
    SIG_IGN = 1


@_int_flag
class SigaltstackFlags:
    SS_ONSTACK = 1
    SS_DISABLE = 2
    SS_AUTODISARM = 1 << 31


# --- FlagSet: how a flags word decomposes -----------------------------------


@dataclass(frozen=True)
class FlagSet:
    """A flags word: optional enumerated ``field`` under ``field_mask``, then bits.

    ``flags`` members are matched in declaration order; a member whose value
    is 0 names the all-zero word (``PROT_NONE``).  ``field`` is for words with
    a multi-valued part: the open access mode, the mmap mapping type, the
    socket type, the exit signal in clone flags (printed last, as strace
    does: ``field_last``).  ``field`` may be :class:`Signal` for such a part.
    """

    name: str
    flags: type[enum.IntFlag] | None = None
    field: type[enum.IntEnum] | None = None
    field_mask: int = 0
    field_last: bool = False


# --- files (asm-generic/fcntl.h, linux/fcntl.h) -----------------------------


@_int_enum
class OpenAccess:
    """The access mode field of open flags (``flags & O_ACCMODE``)."""

    O_RDONLY = 0
    O_WRONLY = 1
    O_RDWR = 2
    O_ACCMODE = 3


O_ACCMODE: Final = 0o3

# Functional API: "__O_SYNC" and "__O_TMPFILE" are the kernel's names.
OpenFlags = enum.IntFlag(
    "OpenFlags",
    [
        ("O_CREAT", 0o100),
        ("O_EXCL", 0o200),
        ("O_NOCTTY", 0o400),
        ("O_TRUNC", 0o1000),
        ("O_APPEND", 0o2000),
        ("O_NONBLOCK", 0o4000),
        ("O_SYNC", 0o4010000),  # __O_SYNC | O_DSYNC
        ("__O_SYNC", 0o4000000),
        ("O_DSYNC", 0o10000),
        ("O_DIRECT", 0o40000),
        ("O_LARGEFILE", 0o100000),
        ("O_NOFOLLOW", 0o400000),
        ("O_NOATIME", 0o1000000),
        ("O_CLOEXEC", 0o2000000),
        ("O_PATH", 0o10000000),
        ("O_TMPFILE", 0o20200000),  # __O_TMPFILE | O_DIRECTORY
        ("__O_TMPFILE", 0o20000000),
        ("O_DIRECTORY", 0o200000),
        ("FASYNC", 0o20000),
    ],
    module=__name__,
)
OpenFlags.__doc__ = "open(2) flags other than the access mode (asm-generic/fcntl.h)."

O_CREAT: Final = 0o100
O_TMPFILE: Final = 0o20200000
O_TMPFILE_BIT: Final = 0o20000000  # the kernel's __O_TMPFILE
O_CLOEXEC: Final = 0o2000000
O_NONBLOCK: Final = 0o4000

OPEN_FLAGS: Final = FlagSet("open_flags", OpenFlags, OpenAccess, O_ACCMODE)
# pipe2, dup3, eventfd2, inotify_init1, ... take open-flag bits without an access mode.
OPEN_BITS: Final = FlagSet("open_bits", OpenFlags)

AT_FDCWD: Final = -100
#: The most one read or write moves (linux/fs.h: INT_MAX rounded down to a page).
MAX_RW_COUNT: Final = 0x7FFF_F000


@_int_flag
class AtFlags:
    """*at() flags (linux/fcntl.h); 0x200 is AT_REMOVEDIR here, AT_EACCESS for faccessat."""

    AT_SYMLINK_NOFOLLOW = 0x100
    AT_REMOVEDIR = 0x200
    AT_SYMLINK_FOLLOW = 0x400
    AT_NO_AUTOMOUNT = 0x800
    AT_EMPTY_PATH = 0x1000
    AT_RECURSIVE = 0x8000


@_int_flag
class AccessAtFlags:
    """faccessat2(2) flags: same word as AtFlags, 0x200 read as AT_EACCESS."""

    AT_SYMLINK_NOFOLLOW = 0x100
    AT_EACCESS = 0x200
    AT_EMPTY_PATH = 0x1000


@_int_enum
class StatxSync:
    """The AT_STATX_SYNC_TYPE field (mask 0x6000) of statx(2) flags."""

    AT_STATX_SYNC_AS_STAT = 0x0000
    AT_STATX_FORCE_SYNC = 0x2000
    AT_STATX_DONT_SYNC = 0x4000


AT_STATX_SYNC_TYPE: Final = 0x6000
AT_FLAGS: Final = FlagSet("at_flags", AtFlags)
ACCESSAT_FLAGS: Final = FlagSet("faccessat_flags", AccessAtFlags)
STATX_FLAGS: Final = FlagSet("statx_flags", AtFlags, StatxSync, AT_STATX_SYNC_TYPE)


@_int_flag
class StatxMask:
    """statx(2) mask (linux/stat.h); the two combined names first, as strace prints."""

    STATX_ALL = 0x00000FFF
    STATX_BASIC_STATS = 0x000007FF
    STATX_TYPE = 0x00000001
    STATX_MODE = 0x00000002
    STATX_NLINK = 0x00000004
    STATX_UID = 0x00000008
    STATX_GID = 0x00000010
    STATX_ATIME = 0x00000020
    STATX_MTIME = 0x00000040
    STATX_CTIME = 0x00000080
    STATX_INO = 0x00000100
    STATX_SIZE = 0x00000200
    STATX_BLOCKS = 0x00000400
    STATX_BTIME = 0x00000800
    STATX_MNT_ID = 0x00001000
    STATX_DIOALIGN = 0x00002000
    STATX_MNT_ID_UNIQUE = 0x00004000
    STATX_SUBVOL = 0x00008000
    STATX_WRITE_ATOMIC = 0x00010000
    STATX_DIO_READ_ALIGN = 0x00020000


@_int_flag
class AccessMode:
    """access(2) mode (unistd.h); F_OK is the empty set."""

    F_OK = 0
    R_OK = 4
    W_OK = 2
    X_OK = 1


@_int_enum
class FileType:
    """The S_IFMT field of a mode (linux/stat.h)."""

    S_IFSOCK = 0o140000
    S_IFLNK = 0o120000
    S_IFREG = 0o100000
    S_IFBLK = 0o060000
    S_IFDIR = 0o040000
    S_IFCHR = 0o020000
    S_IFIFO = 0o010000


S_IFMT: Final = 0o170000


@_int_flag
class ModeBits:
    """set-id and sticky bits of a mode; the permission bits print as octal."""

    S_ISUID = 0o4000
    S_ISGID = 0o2000
    S_ISVTX = 0o1000


@_int_flag
class RenameFlags:
    RENAME_NOREPLACE = 1
    RENAME_EXCHANGE = 2
    RENAME_WHITEOUT = 4


@_int_enum
class SeekWhence:
    """lseek(2) whence (linux/fs.h)."""

    SEEK_SET = 0
    SEEK_CUR = 1
    SEEK_END = 2
    SEEK_DATA = 3
    SEEK_HOLE = 4


@_int_enum
class FcntlCmd:
    """fcntl(2) commands (asm-generic/fcntl.h, linux/fcntl.h)."""

    F_DUPFD = 0
    F_GETFD = 1
    F_SETFD = 2
    F_GETFL = 3
    F_SETFL = 4
    F_GETLK = 5
    F_SETLK = 6
    F_SETLKW = 7
    F_SETOWN = 8
    F_GETOWN = 9
    F_SETSIG = 10
    F_GETSIG = 11
    F_SETOWN_EX = 15
    F_GETOWN_EX = 16
    F_GETOWNER_UIDS = 17
    F_OFD_GETLK = 36
    F_OFD_SETLK = 37
    F_OFD_SETLKW = 38
    F_SETLEASE = 1024
    F_GETLEASE = 1025
    F_NOTIFY = 1026
    F_DUPFD_QUERY = 1027
    F_CREATED_QUERY = 1028
    F_CANCELLK = 1029
    F_DUPFD_CLOEXEC = 1030
    F_SETPIPE_SZ = 1031
    F_GETPIPE_SZ = 1032
    F_ADD_SEALS = 1033
    F_GET_SEALS = 1034
    F_GET_RW_HINT = 1035
    F_SET_RW_HINT = 1036
    F_GET_FILE_RW_HINT = 1037
    F_SET_FILE_RW_HINT = 1038


@_int_flag
class FdFlags:
    FD_CLOEXEC = 1


@_int_enum
class LockType:
    """struct flock ``l_type``."""

    F_RDLCK = 0
    F_WRLCK = 1
    F_UNLCK = 2


@_int_flag
class FlockOp:
    """flock(2) operation."""

    LOCK_SH = 1
    LOCK_EX = 2
    LOCK_NB = 4
    LOCK_UN = 8


@_int_flag
class SealFlags:
    F_SEAL_SEAL = 0x0001
    F_SEAL_SHRINK = 0x0002
    F_SEAL_GROW = 0x0004
    F_SEAL_WRITE = 0x0008
    F_SEAL_FUTURE_WRITE = 0x0010
    F_SEAL_EXEC = 0x0020


@_int_flag
class XattrFlags:
    XATTR_CREATE = 1
    XATTR_REPLACE = 2


# --- memory (asm-generic/mman*.h, asm/mman.h) -------------------------------


@_int_flag
class ProtFlags:
    PROT_NONE = 0x0
    PROT_READ = 0x1
    PROT_WRITE = 0x2
    PROT_EXEC = 0x4
    PROT_SEM = 0x8
    PROT_GROWSDOWN = 0x01000000
    PROT_GROWSUP = 0x02000000


@_int_enum
class MapType:
    """The MAP_TYPE field (mask 0x0f) of mmap flags."""

    MAP_SHARED = 0x01
    MAP_PRIVATE = 0x02
    MAP_SHARED_VALIDATE = 0x03
    MAP_DROPPABLE = 0x08


MAP_TYPE: Final = 0x0F


@_int_flag
class MapFlags:
    """mmap flags outside MAP_TYPE, x86-64 values, in strace's order."""

    MAP_FIXED = 0x10
    MAP_ANONYMOUS = 0x20
    MAP_32BIT = 0x40
    MAP_ABOVE4G = 0x80
    MAP_NORESERVE = 0x4000
    MAP_POPULATE = 0x8000
    MAP_NONBLOCK = 0x10000
    MAP_GROWSDOWN = 0x0100
    MAP_DENYWRITE = 0x0800
    MAP_EXECUTABLE = 0x1000
    MAP_LOCKED = 0x2000
    MAP_STACK = 0x20000
    MAP_HUGETLB = 0x40000
    MAP_SYNC = 0x80000
    MAP_UNINITIALIZED = 0x4000000
    MAP_FIXED_NOREPLACE = 0x100000


MAP_FLAGS: Final = FlagSet("mmap_flags", MapFlags, MapType, MAP_TYPE)
PROT_FLAGS: Final = FlagSet("mmap_prot", ProtFlags)


@_int_flag
class MremapFlags:
    MREMAP_MAYMOVE = 1
    MREMAP_FIXED = 2
    MREMAP_DONTUNMAP = 4


@_int_flag
class MsyncFlags:
    MS_ASYNC = 1
    MS_INVALIDATE = 2
    MS_SYNC = 4


@_int_flag
class PkeyAccess:
    """pkey_alloc(2)'s access rights (linux/mman.h)."""

    PKEY_DISABLE_ACCESS = 0x1
    PKEY_DISABLE_WRITE = 0x2


#: pkey_mprotect(2)'s key that asks for none: the call is mprotect(2).
NO_PKEY = -1


def c_int(register: int) -> int:
    """A system call's C ``int`` argument (a descriptor, a signal number, a key) from
    its 64-bit register: the low 32 bits, signed, as the kernel reads it."""
    register &= 0xFFFF_FFFF
    return register - (1 << 32) if register & 0x8000_0000 else register


@_int_flag
class MlockFlags:
    MLOCK_ONFAULT = 0x01


@_int_flag
class MlockallFlags:
    MCL_CURRENT = 1
    MCL_FUTURE = 2
    MCL_ONFAULT = 4


@_int_enum
class MadviseAdvice:
    """madvise(2) advice (asm-generic/mman-common.h)."""

    MADV_NORMAL = 0
    MADV_RANDOM = 1
    MADV_SEQUENTIAL = 2
    MADV_WILLNEED = 3
    MADV_DONTNEED = 4
    MADV_FREE = 8
    MADV_REMOVE = 9
    MADV_DONTFORK = 10
    MADV_DOFORK = 11
    MADV_MERGEABLE = 12
    MADV_UNMERGEABLE = 13
    MADV_HUGEPAGE = 14
    MADV_NOHUGEPAGE = 15
    MADV_DONTDUMP = 16
    MADV_DODUMP = 17
    MADV_WIPEONFORK = 18
    MADV_KEEPONFORK = 19
    MADV_COLD = 20
    MADV_PAGEOUT = 21
    MADV_POPULATE_READ = 22
    MADV_POPULATE_WRITE = 23
    MADV_DONTNEED_LOCKED = 24
    MADV_COLLAPSE = 25
    MADV_GUARD_INSTALL = 102
    MADV_GUARD_REMOVE = 103
    MADV_HWPOISON = 100
    MADV_SOFT_OFFLINE = 101


@_int_flag
class MempolicyFlags:
    """get_mempolicy(2) flags (linux/mempolicy.h)."""

    MPOL_F_NODE = 1 << 0
    MPOL_F_ADDR = 1 << 1
    MPOL_F_MEMS_ALLOWED = 1 << 2


@_int_enum
class FadviseAdvice:
    """fadvise64(2) advice (linux/fadvise.h)."""

    POSIX_FADV_NORMAL = 0
    POSIX_FADV_RANDOM = 1
    POSIX_FADV_SEQUENTIAL = 2
    POSIX_FADV_WILLNEED = 3
    POSIX_FADV_DONTNEED = 4
    POSIX_FADV_NOREUSE = 5


@_int_flag
class MemfdFlags:
    MFD_CLOEXEC = 0x0001
    MFD_ALLOW_SEALING = 0x0002
    MFD_HUGETLB = 0x0004
    MFD_NOEXEC_SEAL = 0x0008
    MFD_EXEC = 0x0010


# --- processes (linux/sched.h, linux/wait.h) --------------------------------


@_int_flag
class CloneFlags:
    """clone(2) flags above CSIGNAL, in strace's order."""

    CLONE_VM = 0x00000100
    CLONE_FS = 0x00000200
    CLONE_FILES = 0x00000400
    CLONE_SIGHAND = 0x00000800
    CLONE_PIDFD = 0x00001000
    CLONE_PTRACE = 0x00002000
    CLONE_VFORK = 0x00004000
    CLONE_PARENT = 0x00008000
    CLONE_THREAD = 0x00010000
    CLONE_NEWNS = 0x00020000
    CLONE_SYSVSEM = 0x00040000
    CLONE_SETTLS = 0x00080000
    CLONE_PARENT_SETTID = 0x00100000
    CLONE_CHILD_CLEARTID = 0x00200000
    CLONE_DETACHED = 0x00400000
    CLONE_UNTRACED = 0x00800000
    CLONE_CHILD_SETTID = 0x01000000
    CLONE_NEWCGROUP = 0x02000000
    CLONE_NEWUTS = 0x04000000
    CLONE_NEWIPC = 0x08000000
    CLONE_NEWUSER = 0x10000000
    CLONE_NEWPID = 0x20000000
    CLONE_NEWNET = 0x40000000
    CLONE_IO = 0x80000000
    CLONE_NEWTIME = 0x00000080  # a CSIGNAL bit, valid only in clone3/unshare
    CLONE_CLEAR_SIGHAND = 0x100000000
    CLONE_INTO_CGROUP = 0x200000000


CSIGNAL: Final = 0x000000FF
# clone(2): the low byte is the signal sent to the parent when the child exits.
CLONE_FLAGS: Final = FlagSet("clone_flags", CloneFlags, Signal, CSIGNAL, field_last=True)
# unshare(2) and setns(2) take the same bits without an exit signal.
UNSHARE_FLAGS: Final = FlagSet("unshare_flags", CloneFlags)

# Functional API: "__WALL" and friends are the kernel's names.
WaitOptions = enum.IntFlag(
    "WaitOptions",
    [
        ("WNOHANG", 0x00000001),
        ("WUNTRACED", 0x00000002),
        ("WEXITED", 0x00000004),
        ("WCONTINUED", 0x00000008),
        ("WNOWAIT", 0x01000000),
        ("__WNOTHREAD", 0x20000000),
        ("__WALL", 0x40000000),
        ("__WCLONE", 0x80000000),
    ],
    module=__name__,
)
WaitOptions.__doc__ = "wait4(2)/waitid(2) options (linux/wait.h)."


@_int_enum
class IdType:
    """waitid(2) idtype."""

    P_ALL = 0
    P_PID = 1
    P_PGID = 2
    P_PIDFD = 3


@_int_enum
class RlimitResource:
    """getrlimit(2) resources (asm-generic/resource.h)."""

    RLIMIT_CPU = 0
    RLIMIT_FSIZE = 1
    RLIMIT_DATA = 2
    RLIMIT_STACK = 3
    RLIMIT_CORE = 4
    RLIMIT_RSS = 5
    RLIMIT_NPROC = 6
    RLIMIT_NOFILE = 7
    RLIMIT_MEMLOCK = 8
    RLIMIT_AS = 9
    RLIMIT_LOCKS = 10
    RLIMIT_SIGPENDING = 11
    RLIMIT_MSGQUEUE = 12
    RLIMIT_NICE = 13
    RLIMIT_RTPRIO = 14
    RLIMIT_RTTIME = 15


RLIM64_INFINITY: Final = 0xFFFFFFFFFFFFFFFF


@_int_enum
class RusageWho:
    RUSAGE_SELF = 0
    RUSAGE_CHILDREN = -1
    RUSAGE_THREAD = 1


@_int_enum
class PriorityWhich:
    PRIO_PROCESS = 0
    PRIO_PGRP = 1
    PRIO_USER = 2


@_int_enum
class SchedPolicy:
    SCHED_OTHER = 0
    SCHED_FIFO = 1
    SCHED_RR = 2
    SCHED_BATCH = 3
    SCHED_IDLE = 5
    SCHED_DEADLINE = 6
    SCHED_EXT = 7


@_int_enum
class ArchPrctlCode:
    """arch_prctl(2) codes (asm/prctl.h)."""

    ARCH_SET_GS = 0x1001
    ARCH_SET_FS = 0x1002
    ARCH_GET_FS = 0x1003
    ARCH_GET_GS = 0x1004
    ARCH_GET_CPUID = 0x1011
    ARCH_SET_CPUID = 0x1012
    ARCH_GET_XCOMP_SUPP = 0x1021
    ARCH_GET_XCOMP_PERM = 0x1022
    ARCH_REQ_XCOMP_PERM = 0x1023
    ARCH_GET_XCOMP_GUEST_PERM = 0x1024
    ARCH_REQ_XCOMP_GUEST_PERM = 0x1025
    ARCH_XCOMP_TILECFG = 17
    ARCH_XCOMP_TILEDATA = 18
    ARCH_MAP_VDSO_X32 = 0x2001
    ARCH_MAP_VDSO_32 = 0x2002
    ARCH_MAP_VDSO_64 = 0x2003
    ARCH_GET_UNTAG_MASK = 0x4001
    ARCH_ENABLE_TAGGED_ADDR = 0x4002
    ARCH_GET_MAX_TAG_BITS = 0x4003
    ARCH_FORCE_TAGGED_SVA = 0x4004
    ARCH_SHSTK_ENABLE = 0x5001
    ARCH_SHSTK_DISABLE = 0x5002
    ARCH_SHSTK_LOCK = 0x5003
    ARCH_SHSTK_UNLOCK = 0x5004
    ARCH_SHSTK_STATUS = 0x5005


@_int_enum
class PrctlOption:
    """prctl(2) options (linux/prctl.h)."""

    PR_SET_PDEATHSIG = 1
    PR_GET_PDEATHSIG = 2
    PR_GET_DUMPABLE = 3
    PR_SET_DUMPABLE = 4
    PR_GET_UNALIGN = 5
    PR_SET_UNALIGN = 6
    PR_GET_KEEPCAPS = 7
    PR_SET_KEEPCAPS = 8
    PR_GET_FPEMU = 9
    PR_SET_FPEMU = 10
    PR_GET_FPEXC = 11
    PR_SET_FPEXC = 12
    PR_GET_TIMING = 13
    PR_SET_TIMING = 14
    PR_SET_NAME = 15
    PR_GET_NAME = 16
    PR_GET_ENDIAN = 19
    PR_SET_ENDIAN = 20
    PR_GET_SECCOMP = 21
    PR_SET_SECCOMP = 22
    PR_CAPBSET_READ = 23
    PR_CAPBSET_DROP = 24
    PR_GET_TSC = 25
    PR_SET_TSC = 26
    PR_GET_SECUREBITS = 27
    PR_SET_SECUREBITS = 28
    PR_SET_TIMERSLACK = 29
    PR_GET_TIMERSLACK = 30
    PR_TASK_PERF_EVENTS_DISABLE = 31
    PR_TASK_PERF_EVENTS_ENABLE = 32
    PR_MCE_KILL = 33
    PR_MCE_KILL_GET = 34
    PR_SET_MM = 35
    PR_SET_CHILD_SUBREAPER = 36
    PR_GET_CHILD_SUBREAPER = 37
    PR_SET_NO_NEW_PRIVS = 38
    PR_GET_NO_NEW_PRIVS = 39
    PR_GET_TID_ADDRESS = 40
    PR_SET_THP_DISABLE = 41
    PR_GET_THP_DISABLE = 42
    PR_MPX_ENABLE_MANAGEMENT = 43
    PR_MPX_DISABLE_MANAGEMENT = 44
    PR_SET_FP_MODE = 45
    PR_GET_FP_MODE = 46
    PR_CAP_AMBIENT = 47
    PR_SVE_SET_VL = 50
    PR_SVE_GET_VL = 51
    PR_GET_SPECULATION_CTRL = 52
    PR_SET_SPECULATION_CTRL = 53
    PR_PAC_RESET_KEYS = 54
    PR_SET_TAGGED_ADDR_CTRL = 55
    PR_GET_TAGGED_ADDR_CTRL = 56
    PR_SET_IO_FLUSHER = 57
    PR_GET_IO_FLUSHER = 58
    PR_SET_SYSCALL_USER_DISPATCH = 59
    PR_PAC_SET_ENABLED_KEYS = 60
    PR_PAC_GET_ENABLED_KEYS = 61
    PR_SCHED_CORE = 62
    PR_SME_SET_VL = 63
    PR_SME_GET_VL = 64
    PR_SET_MDWE = 65
    PR_GET_MDWE = 66
    PR_SET_MEMORY_MERGE = 67
    PR_GET_MEMORY_MERGE = 68
    PR_SET_VMA = 0x53564D41


@_int_enum
class SuidDump:
    """PR_GET_DUMPABLE results (linux/sched/coredump.h)."""

    SUID_DUMP_DISABLE = 0
    SUID_DUMP_USER = 1
    SUID_DUMP_ROOT = 2


@_int_enum
class FutexOp:
    """futex(2) commands with FUTEX_PRIVATE_FLAG folded in (linux/futex.h)."""

    FUTEX_WAIT = 0
    FUTEX_WAKE = 1
    FUTEX_FD = 2
    FUTEX_REQUEUE = 3
    FUTEX_CMP_REQUEUE = 4
    FUTEX_WAKE_OP = 5
    FUTEX_LOCK_PI = 6
    FUTEX_UNLOCK_PI = 7
    FUTEX_TRYLOCK_PI = 8
    FUTEX_WAIT_BITSET = 9
    FUTEX_WAKE_BITSET = 10
    FUTEX_WAIT_REQUEUE_PI = 11
    FUTEX_CMP_REQUEUE_PI = 12
    FUTEX_LOCK_PI2 = 13
    FUTEX_WAIT_PRIVATE = 128
    FUTEX_WAKE_PRIVATE = 129
    FUTEX_FD_PRIVATE = 130
    FUTEX_REQUEUE_PRIVATE = 131
    FUTEX_CMP_REQUEUE_PRIVATE = 132
    FUTEX_WAKE_OP_PRIVATE = 133
    FUTEX_LOCK_PI_PRIVATE = 134
    FUTEX_UNLOCK_PI_PRIVATE = 135
    FUTEX_TRYLOCK_PI_PRIVATE = 136
    FUTEX_WAIT_BITSET_PRIVATE = 137
    FUTEX_WAKE_BITSET_PRIVATE = 138
    FUTEX_WAIT_REQUEUE_PI_PRIVATE = 139
    FUTEX_CMP_REQUEUE_PI_PRIVATE = 140
    FUTEX_LOCK_PI2_PRIVATE = 141


@_int_flag
class FutexFlags:
    FUTEX_CLOCK_REALTIME = 256


FUTEX_PRIVATE_FLAG: Final = 128
FUTEX_CMD_MASK: Final = 0x7F  # ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME), low byte
FUTEX_OP: Final = FlagSet("futex_op", FutexFlags, FutexOp, FUTEX_CMD_MASK | FUTEX_PRIVATE_FLAG)


@_int_enum
class ShmCtlCmd:
    """shmctl(2) commands (linux/ipc.h, linux/shm.h)."""

    IPC_RMID = 0
    IPC_SET = 1
    IPC_STAT = 2
    IPC_INFO = 3
    SHM_LOCK = 11
    SHM_UNLOCK = 12
    SHM_STAT = 13
    SHM_INFO = 14
    SHM_STAT_ANY = 15


@_int_enum
class SemCtlCmd:
    """semctl(2) commands (linux/ipc.h, linux/sem.h)."""

    IPC_RMID = 0
    IPC_SET = 1
    IPC_STAT = 2
    IPC_INFO = 3
    GETPID = 11
    GETVAL = 12
    GETALL = 13
    GETNCNT = 14
    GETZCNT = 15
    SETVAL = 16
    SETALL = 17
    SEM_STAT = 18
    SEM_INFO = 19
    SEM_STAT_ANY = 20


@_int_enum
class MsgCtlCmd:
    """msgctl(2) commands (linux/ipc.h, linux/msg.h)."""

    IPC_RMID = 0
    IPC_SET = 1
    IPC_STAT = 2
    IPC_INFO = 3
    MSG_STAT = 11
    MSG_INFO = 12
    MSG_STAT_ANY = 13


@_int_flag
class InotifyMask:
    """inotify_add_watch(2) mask (linux/inotify.h)."""

    IN_ACCESS = 0x00000001
    IN_MODIFY = 0x00000002
    IN_ATTRIB = 0x00000004
    IN_CLOSE_WRITE = 0x00000008
    IN_CLOSE_NOWRITE = 0x00000010
    IN_OPEN = 0x00000020
    IN_MOVED_FROM = 0x00000040
    IN_MOVED_TO = 0x00000080
    IN_CREATE = 0x00000100
    IN_DELETE = 0x00000200
    IN_DELETE_SELF = 0x00000400
    IN_MOVE_SELF = 0x00000800
    IN_UNMOUNT = 0x00002000
    IN_Q_OVERFLOW = 0x00004000
    IN_IGNORED = 0x00008000
    IN_ONLYDIR = 0x01000000
    IN_DONT_FOLLOW = 0x02000000
    IN_EXCL_UNLINK = 0x04000000
    IN_MASK_CREATE = 0x10000000
    IN_MASK_ADD = 0x20000000
    IN_ISDIR = 0x40000000
    IN_ONESHOT = 0x80000000


@_int_flag
class CloseRangeFlags:
    CLOSE_RANGE_UNSHARE = 1 << 1
    CLOSE_RANGE_CLOEXEC = 1 << 2


# --- time (linux/time.h) ----------------------------------------------------


@_int_enum
class ClockId:
    CLOCK_REALTIME = 0
    CLOCK_MONOTONIC = 1
    CLOCK_PROCESS_CPUTIME_ID = 2
    CLOCK_THREAD_CPUTIME_ID = 3
    CLOCK_MONOTONIC_RAW = 4
    CLOCK_REALTIME_COARSE = 5
    CLOCK_MONOTONIC_COARSE = 6
    CLOCK_BOOTTIME = 7
    CLOCK_REALTIME_ALARM = 8
    CLOCK_BOOTTIME_ALARM = 9
    CLOCK_SGI_CYCLE = 10
    CLOCK_TAI = 11


@_int_flag
class TimerFlags:
    """clock_nanosleep(2)/timer_settime(2) flags."""

    TIMER_ABSTIME = 1


@_int_flag
class TimerfdFlags:
    """timerfd_settime(2) flags."""

    TFD_TIMER_ABSTIME = 1
    TFD_TIMER_CANCEL_ON_SET = 2


@_int_enum
class ItimerWhich:
    ITIMER_REAL = 0
    ITIMER_VIRTUAL = 1
    ITIMER_PROF = 2


# --- events (asm-generic/poll.h, linux/eventpoll.h) -------------------------


@_int_flag
class PollEvents:
    POLLIN = 0x0001
    POLLPRI = 0x0002
    POLLOUT = 0x0004
    POLLERR = 0x0008
    POLLHUP = 0x0010
    POLLNVAL = 0x0020
    POLLRDNORM = 0x0040
    POLLRDBAND = 0x0080
    POLLWRNORM = 0x0100
    POLLWRBAND = 0x0200
    POLLMSG = 0x0400
    POLLREMOVE = 0x1000
    POLLRDHUP = 0x2000


@_int_flag
class EpollEvents:
    EPOLLIN = 0x00000001
    EPOLLPRI = 0x00000002
    EPOLLOUT = 0x00000004
    EPOLLERR = 0x00000008
    EPOLLHUP = 0x00000010
    EPOLLNVAL = 0x00000020
    EPOLLRDNORM = 0x00000040
    EPOLLRDBAND = 0x00000080
    EPOLLWRNORM = 0x00000100
    EPOLLWRBAND = 0x00000200
    EPOLLMSG = 0x00000400
    EPOLLRDHUP = 0x00002000
    EPOLLEXCLUSIVE = 1 << 28
    EPOLLWAKEUP = 1 << 29
    EPOLLONESHOT = 1 << 30
    EPOLLET = 1 << 31


@_int_enum
class EpollCtlOp:
    EPOLL_CTL_ADD = 1
    EPOLL_CTL_DEL = 2
    EPOLL_CTL_MOD = 3


@_int_flag
class EpollFlags:
    EPOLL_CLOEXEC = 0o2000000


@_int_flag
class EventfdFlags:
    EFD_SEMAPHORE = 1
    EFD_NONBLOCK = 0o4000
    EFD_CLOEXEC = 0o2000000


@_int_flag
class TimerfdCreateFlags:
    """timerfd_create(2) flags (the open-flag bits under their TFD_ names)."""

    TFD_CLOEXEC = 0o2000000
    TFD_NONBLOCK = 0o4000


@_int_flag
class InotifyInitFlags:
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000


@_int_flag
class SignalfdFlags:
    SFD_CLOEXEC = 0o2000000
    SFD_NONBLOCK = 0o4000


@_int_enum
class Personality:
    """personality(2) execution domains (linux/personality.h), the low byte."""

    PER_LINUX = 0x0000
    PER_LINUX_32BIT = 0x0800000
    PER_LINUX32 = 0x0008


@_int_flag
class PersonalityFlags:
    """personality(2) flags above the execution domain (linux/personality.h)."""

    UNAME26 = 0x0020000
    ADDR_NO_RANDOMIZE = 0x0040000
    FDPIC_FUNCPTRS = 0x0080000
    MMAP_PAGE_ZERO = 0x0100000
    ADDR_COMPAT_LAYOUT = 0x0200000
    READ_IMPLIES_EXEC = 0x0400000
    ADDR_LIMIT_32BIT = 0x0800000
    SHORT_INODE = 0x1000000
    WHOLE_SECONDS = 0x2000000
    STICKY_TIMEOUTS = 0x4000000
    ADDR_LIMIT_3GB = 0x8000000


@_int_flag
class GrndFlags:
    """getrandom(2) flags (linux/random.h)."""

    GRND_NONBLOCK = 0x0001
    GRND_RANDOM = 0x0002
    GRND_INSECURE = 0x0004


# --- sockets (bits/socket.h, linux/in.h) ------------------------------------


@_int_enum
class AddressFamily:
    """Socket address families; AF_UNIX is spelled first, as strace does."""

    AF_UNSPEC = 0
    AF_UNIX = 1
    AF_LOCAL = 1
    AF_INET = 2
    AF_AX25 = 3
    AF_IPX = 4
    AF_APPLETALK = 5
    AF_NETROM = 6
    AF_BRIDGE = 7
    AF_ATMPVC = 8
    AF_X25 = 9
    AF_INET6 = 10
    AF_ROSE = 11
    AF_DECnet = 12
    AF_NETBEUI = 13
    AF_SECURITY = 14
    AF_KEY = 15
    AF_NETLINK = 16
    AF_PACKET = 17
    AF_ASH = 18
    AF_ECONET = 19
    AF_ATMSVC = 20
    AF_RDS = 21
    AF_SNA = 22
    AF_IRDA = 23
    AF_PPPOX = 24
    AF_WANPIPE = 25
    AF_LLC = 26
    AF_IB = 27
    AF_MPLS = 28
    AF_CAN = 29
    AF_TIPC = 30
    AF_BLUETOOTH = 31
    AF_IUCV = 32
    AF_RXRPC = 33
    AF_ISDN = 34
    AF_PHONET = 35
    AF_IEEE802154 = 36
    AF_CAIF = 37
    AF_ALG = 38
    AF_NFC = 39
    AF_VSOCK = 40
    AF_KCM = 41
    AF_QIPCRTR = 42
    AF_SMC = 43
    AF_XDP = 44
    AF_MCTP = 45


@_int_enum
class SocketType:
    """The type field (low 4 bits) of socket(2) ``type``."""

    SOCK_STREAM = 1
    SOCK_DGRAM = 2
    SOCK_RAW = 3
    SOCK_RDM = 4
    SOCK_SEQPACKET = 5
    SOCK_DCCP = 6
    SOCK_PACKET = 10


@_int_flag
class SocketFlags:
    SOCK_CLOEXEC = 0o2000000
    SOCK_NONBLOCK = 0o4000


SOCK_TYPE_MASK: Final = 0xF
SOCKET_TYPE: Final = FlagSet("socket_type", SocketFlags, SocketType, SOCK_TYPE_MASK)


@_int_enum
class IpProto:
    """IP protocol numbers (linux/in.h)."""

    IPPROTO_IP = 0
    IPPROTO_ICMP = 1
    IPPROTO_IGMP = 2
    IPPROTO_IPIP = 4
    IPPROTO_TCP = 6
    IPPROTO_EGP = 8
    IPPROTO_PUP = 12
    IPPROTO_UDP = 17
    IPPROTO_IDP = 22
    IPPROTO_TP = 29
    IPPROTO_DCCP = 33
    IPPROTO_IPV6 = 41
    IPPROTO_RSVP = 46
    IPPROTO_GRE = 47
    IPPROTO_ESP = 50
    IPPROTO_AH = 51
    IPPROTO_ICMPV6 = 58
    IPPROTO_MTP = 92
    IPPROTO_BEETPH = 94
    IPPROTO_ENCAP = 98
    IPPROTO_PIM = 103
    IPPROTO_COMP = 108
    IPPROTO_L2TP = 115
    IPPROTO_SCTP = 132
    IPPROTO_UDPLITE = 136
    IPPROTO_MPLS = 137
    IPPROTO_ETHERNET = 143
    IPPROTO_RAW = 255
    IPPROTO_MPTCP = 262


@_int_enum
class SocketLevel:
    """setsockopt(2) levels that strace names (SOL_TCP is IPPROTO_TCP)."""

    SOL_IP = 0
    SOL_SOCKET = 1
    SOL_TCP = 6
    SOL_UDP = 17
    SOL_IPV6 = 41
    SOL_ICMPV6 = 58
    SOL_RAW = 255
    SOL_PACKET = 263
    SOL_NETLINK = 270
    SOL_TLS = 282


@_int_enum
class SocketOption:
    """SOL_SOCKET option names (asm-generic/socket.h)."""

    SO_DEBUG = 1
    SO_REUSEADDR = 2
    SO_TYPE = 3
    SO_ERROR = 4
    SO_DONTROUTE = 5
    SO_BROADCAST = 6
    SO_SNDBUF = 7
    SO_RCVBUF = 8
    SO_KEEPALIVE = 9
    SO_OOBINLINE = 10
    SO_NO_CHECK = 11
    SO_PRIORITY = 12
    SO_LINGER = 13
    SO_BSDCOMPAT = 14
    SO_REUSEPORT = 15
    SO_PASSCRED = 16
    SO_PEERCRED = 17
    SO_RCVLOWAT = 18
    SO_SNDLOWAT = 19
    SO_RCVTIMEO_OLD = 20
    SO_SNDTIMEO_OLD = 21
    SO_BINDTODEVICE = 25
    SO_ATTACH_FILTER = 26
    SO_DETACH_FILTER = 27
    SO_PEERNAME = 28
    SO_TIMESTAMP_OLD = 29
    SO_ACCEPTCONN = 30
    SO_PEERSEC = 31
    SO_SNDBUFFORCE = 32
    SO_RCVBUFFORCE = 33
    SO_PASSSEC = 34
    SO_MARK = 36
    SO_PROTOCOL = 38
    SO_DOMAIN = 39
    SO_RXQ_OVFL = 40
    SO_PEEK_OFF = 42
    SO_BUSY_POLL = 46
    SO_INCOMING_CPU = 49
    SO_ATTACH_BPF = 50
    SO_COOKIE = 57
    SO_PEERGROUPS = 59
    SO_ZEROCOPY = 60
    SO_TXTIME = 61
    SO_BINDTOIFINDEX = 62
    SO_PEERPIDFD = 77


@_int_flag
class MsgFlags:
    """send/recv flags (bits/socket.h)."""

    MSG_OOB = 0x01
    MSG_PEEK = 0x02
    MSG_DONTROUTE = 0x04
    MSG_CTRUNC = 0x08
    MSG_PROXY = 0x10
    MSG_TRUNC = 0x20
    MSG_DONTWAIT = 0x40
    MSG_EOR = 0x80
    MSG_WAITALL = 0x100
    MSG_FIN = 0x200
    MSG_SYN = 0x400
    MSG_CONFIRM = 0x800
    MSG_RST = 0x1000
    MSG_ERRQUEUE = 0x2000
    MSG_NOSIGNAL = 0x4000
    MSG_MORE = 0x8000
    MSG_WAITFORONE = 0x10000
    MSG_BATCH = 0x40000
    MSG_SOCK_DEVMEM = 0x2000000
    MSG_ZEROCOPY = 0x4000000
    MSG_FASTOPEN = 0x20000000
    MSG_CMSG_CLOEXEC = 0x40000000


@_int_enum
class ShutdownHow:
    SHUT_RD = 0
    SHUT_WR = 1
    SHUT_RDWR = 2


# --- ioctl (asm-generic/ioctl.h, asm-generic/ioctls.h) ----------------------

_IOC_NRBITS: Final = 8
_IOC_TYPEBITS: Final = 8
_IOC_SIZEBITS: Final = 14
_IOC_NRSHIFT: Final = 0
_IOC_TYPESHIFT: Final = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT: Final = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT: Final = _IOC_SIZESHIFT + _IOC_SIZEBITS


@_int_flag
class IocDir:
    """Direction bits of an ioctl request number, seen from user space."""

    _IOC_NONE = 0
    _IOC_WRITE = 1
    _IOC_READ = 2


def ioc(direction: int, type_: int, nr: int, size: int) -> int:
    """The kernel's _IOC(): compose an ioctl request number."""
    return (
        (direction << _IOC_DIRSHIFT)
        | (type_ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def ioc_fields(request: int) -> tuple[int, int, int, int]:
    """Split an ioctl request into (direction, type, nr, size)."""
    return (
        (request >> _IOC_DIRSHIFT) & 0x3,
        (request >> _IOC_TYPESHIFT) & 0xFF,
        (request >> _IOC_NRSHIFT) & 0xFF,
        (request >> _IOC_SIZESHIFT) & 0x3FFF,
    )


@_int_enum
class IoctlRequest:
    """Terminal and generic file ioctls (asm-generic/ioctls.h).

    The ``_IOR``/``_IOW`` ones are spelled out as numbers; the test checks
    them against :func:`ioc` and the C headers.
    """

    TCGETS = 0x5401
    TCSETS = 0x5402
    TCSETSW = 0x5403
    TCSETSF = 0x5404
    TCGETA = 0x5405
    TCSETA = 0x5406
    TCSETAW = 0x5407
    TCSETAF = 0x5408
    TCSBRK = 0x5409
    TCXONC = 0x540A
    TCFLSH = 0x540B
    TIOCEXCL = 0x540C
    TIOCNXCL = 0x540D
    TIOCSCTTY = 0x540E
    TIOCGPGRP = 0x540F
    TIOCSPGRP = 0x5410
    TIOCOUTQ = 0x5411
    TIOCSTI = 0x5412
    TIOCGWINSZ = 0x5413
    TIOCSWINSZ = 0x5414
    TIOCMGET = 0x5415
    TIOCMBIS = 0x5416
    TIOCMBIC = 0x5417
    TIOCMSET = 0x5418
    TIOCGSOFTCAR = 0x5419
    TIOCSSOFTCAR = 0x541A
    FIONREAD = 0x541B
    TIOCLINUX = 0x541C
    TIOCCONS = 0x541D
    TIOCGSERIAL = 0x541E
    TIOCSSERIAL = 0x541F
    TIOCPKT = 0x5420
    FIONBIO = 0x5421
    TIOCNOTTY = 0x5422
    TIOCSETD = 0x5423
    TIOCGETD = 0x5424
    TCSBRKP = 0x5425
    TIOCSBRK = 0x5427
    TIOCCBRK = 0x5428
    TIOCGSID = 0x5429
    TCGETS2 = 0x802C542A  # _IOR('T', 0x2A, struct termios2)
    TCSETS2 = 0x402C542B  # _IOW('T', 0x2B, struct termios2)
    TCSETSW2 = 0x402C542C
    TCSETSF2 = 0x402C542D
    TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int)
    TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int)
    TIOCGDEV = 0x80045432
    TIOCSIG = 0x40045436
    TIOCVHANGUP = 0x5437
    TIOCGPKT = 0x80045438
    TIOCGPTLCK = 0x80045439
    TIOCGEXCL = 0x80045440
    TIOCGPTPEER = 0x5441  # _IO('T', 0x41)
    FIONCLEX = 0x5450
    FIOCLEX = 0x5451
    FIOASYNC = 0x5452
    TIOCSERGETLSR = 0x5459
    TIOCMIWAIT = 0x545C
    TIOCGICOUNT = 0x545D
    FIOQSIZE = 0x5460
    FIOSETOWN = 0x8901
    SIOCSPGRP = 0x8902
    FIOGETOWN = 0x8903
    SIOCGPGRP = 0x8904
    SIOCATMARK = 0x8905
