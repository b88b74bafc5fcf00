"""The dispatch table: for every x86-64 system call, who serves it and how well.

One entry per call (gVisor's ``linux64.go`` shape, STYLE.md 11): the call's
declaration from ``syscall_table``, its support level, the handler that emulates it
(or None: the declarative forwarder runs it on the host, or it is refused), and for
partial or refused calls the reason a user is told. The emulated calls are the one
literal below; every other call is forwarded when the table can describe all of its
pointers, forwarded for the argument values it can describe (partial), or refused.
Nothing else decides who handles a call: ``dispatch`` reads ``ROUTES`` only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Final, Mapping

from . import (futex, sys_file, sys_memory, sys_net, sys_poll, sys_process, sys_resource,
               sys_signal)
from .syscall_table import SYSCALLS, ArgKind, Dep, SyscallSpec

#: ``handler(proc, cpu, a0, ..., a5)``: the six arguments decoded by their declared
#: kinds; returns the value for RAX (a result or -errno), None when it set the
#: registers itself (execve, rt_sigreturn), or a ``Stop`` that ends the process.
SyscallHandler = Callable[..., object]


class Support(str, enum.Enum):
    EMULATED = "emulated"    # a handler in kvmdune.linux.sys_*
    FORWARDED = "forwarded"  # run by Linux, every pointer copied through checked buffers
    PARTIAL = "partial"      # forwarded for the argument values whose pointers the table describes
    REFUSED = "refused"      # ENOSYS: it would act on the VMM, or is not supported yet


@dataclass(frozen=True)
class Route:
    """How one system call is served."""

    spec: SyscallSpec
    support: Support
    handler: SyscallHandler | None = None   # None: forwarded (or refused)
    reason: str = ""                        # why it is partial or refused

    @property
    def number(self) -> int:
        return self.spec.number

    @property
    def name(self) -> str:
        return self.spec.name


#: The calls a handler emulates, by name, grouped by the module that owns them.
EMULATED: Final[Mapping[str, SyscallHandler]] = MappingProxyType({
    # descriptors: the guest's own table (fdtable.py), and /proc rewriting
    "close": sys_file.sys_close,
    "close_range": sys_file.sys_close_range,
    "dup": sys_file.sys_dup,
    "dup2": sys_file.sys_dup2,
    "dup3": sys_file.sys_dup3,
    "fcntl": sys_file.sys_fcntl,
    "ioctl": sys_file.sys_ioctl,
    "pipe": sys_file.sys_pipe,
    "pipe2": sys_file.sys_pipe2,
    "socketpair": sys_file.sys_socketpair,
    "readlink": sys_file.sys_readlink,
    "readlinkat": sys_file.sys_readlinkat,
    # memory: the guest's own page tables (mm.py)
    "brk": sys_memory.sys_brk,
    "mmap": sys_memory.sys_mmap,
    "munmap": sys_memory.sys_munmap,
    "mprotect": sys_memory.sys_mprotect,
    "pkey_mprotect": sys_memory.sys_pkey_mprotect,
    "pkey_alloc": sys_memory.sys_pkey_alloc,
    "pkey_free": sys_memory.sys_pkey_free,
    "mremap": sys_memory.sys_mremap,
    "madvise": sys_memory.sys_madvise,
    "mincore": sys_memory.sys_mincore,
    "msync": sys_memory.sys_msync,
    "mlock": sys_memory.sys_mlock,
    "munlock": sys_memory.sys_mlock,
    "mlockall": sys_memory.sys_mlockall,
    "munlockall": sys_memory.sys_munlockall,
    "mlock2": sys_memory.sys_mlock2,
    "get_mempolicy": sys_memory.sys_get_mempolicy,
    # sockets: message headers hold nested pointers
    "sendmsg": sys_net.sys_sendmsg,
    "recvmsg": sys_net.sys_recvmsg,
    # waiting: descriptor sets and futex words in guest memory
    "poll": sys_poll.sys_poll,
    "ppoll": sys_poll.sys_ppoll,
    "select": sys_poll.sys_select,
    "pselect6": sys_poll.sys_pselect6,
    "epoll_pwait": sys_poll.sys_epoll_pwait,
    "epoll_pwait2": sys_poll.sys_epoll_pwait2,
    "futex": futex.sys_futex,
    "futex_waitv": futex.sys_futex_waitv,
    # the process itself: its image, its threads (threads.py), its name
    "exit": sys_process.sys_exit,
    "exit_group": sys_process.sys_exit_group,
    "execve": sys_process.sys_execve,
    "execveat": sys_process.sys_execveat,
    "fork": sys_process.sys_fork,
    "vfork": sys_process.sys_vfork,
    "clone": sys_process.sys_clone,
    "clone3": sys_process.sys_clone3,
    "arch_prctl": sys_process.sys_arch_prctl,
    "set_tid_address": sys_process.sys_set_tid_address,
    "set_robust_list": sys_process.sys_set_robust_list,
    "get_robust_list": sys_process.sys_get_robust_list,
    "rseq": sys_process.sys_rseq,
    "gettid": sys_process.sys_gettid,
    "prctl": sys_process.sys_prctl,
    "personality": sys_process.sys_personality,
    # limits: the guest's view, applied to the VMM process where the kernel enforces them
    "prlimit64": sys_resource.sys_prlimit64,
    "getrlimit": sys_resource.sys_getrlimit,
    "setrlimit": sys_resource.sys_setrlimit,
    # signals: the guest's dispositions and mask, delivered by the VMM
    "rt_sigaction": sys_signal.sys_rt_sigaction,
    "rt_sigprocmask": sys_signal.sys_rt_sigprocmask,
    "sigaltstack": sys_signal.sys_sigaltstack,
    "rt_sigreturn": sys_signal.sys_rt_sigreturn,
    "rt_sigpending": sys_signal.sys_rt_sigpending,
    "rt_sigsuspend": sys_signal.sys_rt_sigsuspend,
    "rt_sigtimedwait": sys_signal.sys_rt_sigtimedwait,
    "pause": sys_signal.sys_pause,
    "kill": sys_signal.sys_kill,
    "tkill": sys_signal.sys_tkill,
    "tgkill": sys_signal.sys_tgkill,
    "rt_sigqueueinfo": sys_signal.sys_rt_sigqueueinfo,
    "rt_tgsigqueueinfo": sys_signal.sys_rt_tgsigqueueinfo,
})

#: Calls the table marks as acting on the calling process that are forwarded all the
#: same: the guest process *is* the VMM process to Linux (one pid, one set of
#: credentials, one cwd, one set of children and timers), so these act on exactly
#: what they would act on natively, and none of them reaches the VMM's memory.
SHARED_IDENTITY: Final = frozenset({
    "wait4", "waitid", "getcwd", "chdir", "fchdir", "umask", "setuid", "setgid",
    "setpgid", "setsid", "setreuid", "setregid", "setgroups", "setresuid", "setresgid",
    "setfsuid", "setfsgid", "getitimer", "alarm", "setitimer", "setpriority",
    "sched_setparam", "sched_setscheduler", "sched_setaffinity", "sched_setattr",
    "ioprio_set", "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun",
    "timer_delete", "membarrier", "pidfd_open",
    # The process's NUMA policy for its future allocations: guest memory is among them.
    "set_mempolicy",
})

#: Why a call that would act on the VMM process is refused, for the groups of them.
_VMM_REASONS: Final = (
    ({"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
      "process_madvise"},
     "it would reach the VMM process's memory or descriptors"),
    ({"seccomp", "landlock_add_rule", "landlock_restrict_self", "capset", "unshare",
      "setns", "lsm_set_self_attr"},
     "it would change the VMM process's own security state"),
    ({"modify_ldt", "set_thread_area", "get_thread_area", "iopl", "ioperm"},
     "32-bit segments and I/O ports: a Dune guest has no 32-bit code segment"),
    ({"userfaultfd", "mbind", "set_mempolicy_home_node", "migrate_pages",
      "move_pages", "remap_file_pages",
      "memfd_secret", "map_shadow_stack", "mseal", "uretprobe", "uprobe"},
     "it acts on the VMM's memory, not the guest's page tables (not emulated yet)"),
    ({"io_setup", "io_destroy", "io_getevents", "io_submit", "io_cancel", "io_pgetevents",
      "io_uring_setup", "io_uring_enter", "io_uring_register"},
     "asynchronous I/O would let the host kernel use guest buffers after the call "
     "returns (not emulated yet)"),
    ({"shmat", "shmdt", "uselib"},
     "it maps memory into the VMM's address space, not the guest's (not emulated yet)"),
    ({"mq_notify", "perf_event_open", "bpf"},
     "it would register guest addresses or code with the host kernel for the VMM "
     "process (not emulated yet)"),
    ({"vhangup", "pivot_root", "chroot", "acct", "mount", "umount2", "swapon", "swapoff",
      "reboot", "init_module", "delete_module", "finit_module", "kexec_load",
      "kexec_file_load", "open_tree", "open_tree_attr", "move_mount", "fsopen", "fsconfig",
      "fsmount", "fspick", "mount_setattr"},
     "it administers the machine, which a Dune process has no business doing"),
    ({"restart_syscall"}, "only the kernel's own restart of a system call uses it"),
)


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


#: Argument kinds the forwarder cannot copy (it refuses such calls when non-NULL).
UNFORWARDABLE: Final = frozenset({ArgKind.PTR, ArgKind.ADDR, ArgKind.OPAQUE,
                                  ArgKind.MSGHDR, ArgKind.STRING_ARRAY})


def _route(spec: SyscallSpec) -> Route:
    handler = EMULATED.get(spec.name)
    if handler is not None:
        return Route(spec, Support.EMULATED, handler)
    if spec.vmm_sensitive and spec.name not in SHARED_IDENTITY:
        reason = next((why for names, why in _VMM_REASONS if spec.name in names),
                      "it would act on the VMM process itself")
        return Route(spec, Support.REFUSED, reason=reason)
    partial = []
    for slot in spec.args:
        kinds, dependent = _kinds(slot)
        if _holds_pointers(slot):
            kinds = kinds | {ArgKind.OPAQUE}
        blocked = kinds & UNFORWARDABLE
        if not blocked:
            continue
        name = slot.default.name if isinstance(slot, Dep) and slot.default else getattr(slot, "name", "?")
        what = ", ".join(sorted(kind.value for kind in blocked))
        partial.append(f"{name} ({what})" if dependent else f"{name} ({what}) is NULL")
    if partial:
        # The forwarder runs the call where these arguments need no copying, and
        # answers ENOSYS (NotForwardable) where they would.
        return Route(spec, Support.PARTIAL,
                     reason="forwarded only where the table describes every pointer: "
                            + "; ".join(partial))
    return Route(spec, Support.FORWARDED)


#: Every system call by number: the dispatcher's one table.
ROUTES: Final[Mapping[int, Route]] = MappingProxyType(
    {number: _route(spec) for number, spec in sorted(SYSCALLS.items())})


def forwards_only(spec: SyscallSpec) -> bool:
    """Whether the Python path does nothing for this call but forward it to the host
    (no handler emulates it), so another server may forward it the same way."""
    route = ROUTES.get(spec.number)
    return route is not None and route.support in (Support.FORWARDED, Support.PARTIAL)


def _check_table() -> None:
    """Every emulated name is a real call (a typo would silently forward it)."""
    names = {spec.name for spec in SYSCALLS.values()}
    unknown = sorted(set(EMULATED) - names)
    if unknown:
        raise RuntimeError(f"EMULATED names calls the table does not have: {unknown}")


_check_table()
