"""Process system calls: exit, execve, fork/vfork/clone/clone3 (threads too),
identity, limits, arch_prctl.

A guest process is one VMM process, so process identity (pids, groups, sessions),
wait4 and kill are the host's own and are forwarded; what would touch the VMM
itself (its memory, its FS base, its threads) is emulated. A guest thread is a
vCPU and a host thread of the VMM (threads.py).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from ..machine import Stop
from ..machine.layout import TASK_SIZE
from ..memory import PAGE_SIZE, USER_SPACE_END
from .abi import (AT_FDCWD, CSIGNAL, ArchPrctlCode, AtFlags, CloneFlags, Errno,
                  PersonalityFlags, PrctlOption)
from . import profiling
from .aslr import PERSONALITY_QUERY
from .elf import ExecFormatError
from .exit_status import ExitStatus
from .exec import exec_program
from .task_name import TASK_COMM_LEN, comm_from_user, show_on_host
from .thp import PR_THP_DISABLE_EXCEPT_ADVISED
from .uaccess import Fault, read_path, read_string_array, write_u32, write_u64
from .uaccess import read_bytes, write_bytes

#: The total argv+envp size execve accepts (Linux: a quarter of the 8 MiB stack).
ARG_MAX_BYTES = 2 << 20


def sys_exit(proc, cpu, status, *_):
    """Implements exit(2): ends the calling thread (with the last one, the process)."""
    return proc.threads.exit_thread(status & 0xFF)


def sys_exit_group(proc, cpu, status, *_):
    """Implements exit_group(2): ends every thread of the process."""
    return Stop(value=ExitStatus(code=status & 0xFF))


def sys_execve(proc, cpu, path, argv, envp, *_):
    """Implements execve(2): a new image in a fresh address space."""
    return _execve(proc, read_path(proc.space, path).decode("utf-8", "surrogateescape"),
                   argv, envp)


def sys_execveat(proc, cpu, dirfd, path, argv, envp, flags, _):
    """Implements execveat(2): a path absolute, relative to the cwd or to ``dirfd``,
    or with AT_EMPTY_PATH and an empty path the file ``dirfd`` is open on (fexecve)."""
    name = read_path(proc.space, path).decode("utf-8", "surrogateescape")
    if name.startswith("/") or dirfd == AT_FDCWD:
        return _execve(proc, name, argv, envp)
    host = proc.fds.host(dirfd)
    if host is None:
        return -Errno.EBADF
    target = os.readlink(f"/proc/self/fd/{host}")
    if name:
        return _execve(proc, os.path.join(target, name), argv, envp)
    if not flags & AtFlags.AT_EMPTY_PATH:
        return -Errno.ENOENT
    # Linux executes it as /dev/fd/N and names the task after the file (its dentry).
    return _execve(proc, f"/dev/fd/{dirfd}", argv, envp, task_name=target)


def _execve(proc, path: str, argv_ptr: int, envp_ptr: int, task_name: str | None = None):
    filename = task_name or path
    # /proc/self/exe names the guest program (busybox re-executes itself that way).
    path = proc.host_path(path.encode("utf-8", "surrogateescape")).decode(
        "utf-8", "surrogateescape")
    argv = read_string_array(proc.space, argv_ptr, ARG_MAX_BYTES)
    envp = read_string_array(proc.space, envp_ptr, ARG_MAX_BYTES)
    try:
        with profiling.phase("execve.load"):
            new = exec_program(proc.machine, path, argv, envp,
                               personality=proc.personality,
                               patch_sites=proc.mm.patch_sites)
    except ExecFormatError as exc:
        return -exc.errno
    # Past the point of no return: the other threads end (Linux's de_thread), and a
    # thread other than the main one takes its place and the process id.
    proc.threads.end_others()
    proc.replace_image(new.space, new.mm, new.exe, new.argv, envp, new.loaded.entry,
                       new.loaded.sp, new.loaded.auxv, filename=filename)
    return proc.threads.become_main()


def sys_fork(proc, cpu, *_):
    """Implements fork(2): the child is a new VMM process with its own VM."""
    return proc.fork(vfork=False)


def sys_vfork(proc, cpu, *_):
    """Implements vfork(2) as fork, with the parent waiting for the child's exec/exit."""
    return proc.fork(vfork=True)


#: The flags a thread may be created with (as glibc, musl, Go and Rust create them).
THREAD_FLAGS = (CloneFlags.CLONE_VM | CloneFlags.CLONE_FS | CloneFlags.CLONE_FILES
                | CloneFlags.CLONE_SIGHAND | CloneFlags.CLONE_THREAD | CloneFlags.CLONE_SYSVSEM
                | CloneFlags.CLONE_SETTLS | CloneFlags.CLONE_PARENT_SETTID
                | CloneFlags.CLONE_CHILD_CLEARTID | CloneFlags.CLONE_CHILD_SETTID
                | CloneFlags.CLONE_DETACHED | CloneFlags.CLONE_UNTRACED | CloneFlags.CLONE_IO)
#: What a thread must share with its creator here: the VMM has one descriptor table
#: and one current directory per process.
THREAD_SHARES = CloneFlags.CLONE_FS | CloneFlags.CLONE_FILES


@dataclass(frozen=True)
class CloneRequest:
    """What clone(2) or clone3(2) asked for; ``stack`` is the new stack pointer."""

    flags: int
    stack: int
    parent_tid: int
    child_tid: int
    tls: int
    exit_signal: int


def sys_clone(proc, cpu, flags, stack, parent_tid, child_tid, tls, _):
    """Implements clone(2): threads (CLONE_THREAD, see threads.py), fork-like
    children (without CLONE_VM), and CLONE_VM|CLONE_VFORK as posix_spawn issues it
    (run as vfork)."""
    return _clone(proc, CloneRequest(flags & ~CSIGNAL, stack, parent_tid, child_tid, tls,
                                     flags & CSIGNAL))


def _clone(proc, request: CloneRequest):
    flags = request.flags
    if flags & CloneFlags.CLONE_SIGHAND and not flags & CloneFlags.CLONE_VM:
        return -Errno.EINVAL
    if flags & CloneFlags.CLONE_THREAD and not flags & CloneFlags.CLONE_SIGHAND:
        return -Errno.EINVAL
    if flags & CloneFlags.CLONE_SETTLS and request.tls >= TASK_SIZE:
        return -Errno.EPERM      # what ARCH_SET_FS answers: no child is made
    if flags & CloneFlags.CLONE_THREAD:
        return _clone_thread(proc, request)
    if flags & CloneFlags.CLONE_VM and not flags & CloneFlags.CLONE_VFORK:
        proc.log("kvmdune: clone() of a process sharing its memory (CLONE_VM without "
                 "CLONE_THREAD or CLONE_VFORK) is not supported: ENOSYS")
        return -Errno.ENOSYS
    if flags & CloneFlags.CLONE_SIGHAND:
        return -Errno.EINVAL
    pid = proc.fork(vfork=bool(flags & CloneFlags.CLONE_VFORK))
    if pid < 0:
        return pid
    cpu = proc.cpu
    if pid == 0:           # in the child
        if request.stack:
            cpu.regs.rsp = request.stack
        if flags & CloneFlags.CLONE_SETTLS:
            cpu.fs_base = request.tls
        if flags & CloneFlags.CLONE_CHILD_SETTID and request.child_tid:
            _put_tid(proc, request.child_tid, os.getpid())
        if flags & CloneFlags.CLONE_CHILD_CLEARTID:
            proc.task.clear_child_tid = request.child_tid
        if flags & CloneFlags.CLONE_CLEAR_SIGHAND:
            proc.sighand.reset_handled()
    elif flags & CloneFlags.CLONE_PARENT_SETTID and request.parent_tid:
        _put_tid(proc, request.parent_tid, pid)
    return pid


def _clone_thread(proc, request: CloneRequest):
    """A new guest thread: a vCPU run by a host thread of its own (threads.py);
    returns its id once its tid words are written and it runs."""
    flags = request.flags
    if flags & ~THREAD_FLAGS or request.exit_signal:
        return -Errno.EINVAL
    if flags & THREAD_SHARES != THREAD_SHARES:
        proc.log("kvmdune: clone() of a thread with its own descriptor table or current "
                 "directory (CLONE_THREAD without CLONE_FILES|CLONE_FS) is not supported: "
                 "ENOSYS")
        return -Errno.ENOSYS
    tls = request.tls if flags & CloneFlags.CLONE_SETTLS else None
    task = proc.threads.spawn(proc.task, request.stack, tls)
    if isinstance(task, int):
        return task
    if flags & CloneFlags.CLONE_PARENT_SETTID and request.parent_tid:
        _put_tid(proc, request.parent_tid, task.tid)
    if flags & CloneFlags.CLONE_CHILD_SETTID and request.child_tid:
        _put_tid(proc, request.child_tid, task.tid)
    if flags & CloneFlags.CLONE_CHILD_CLEARTID:
        task.clear_child_tid = request.child_tid
    task.comm = proc.task.comm or proc.comm        # a thread starts with its creator's name
    proc.threads.start(task)
    return task.tid


def _put_tid(proc, address: int, tid: int) -> None:
    """clone's tid words: Linux ignores a fault writing them (the child exists by
    then; neither side's clone fails for it)."""
    try:
        write_u32(proc.space, address, tid)
    except Fault:
        pass


#: struct clone_args (linux/sched.h): CLONE_ARGS_SIZE_VER0 is 64 bytes, VER1 adds
#: set_tid and set_tid_size (80), VER2 cgroup (88).
_CLONE_ARGS = struct.Struct("<11Q")
CLONE_ARGS_SIZE_VER0 = 64
_CLONE3_UNSUPPORTED = (CloneFlags.CLONE_PIDFD | CloneFlags.CLONE_INTO_CGROUP
                       | CloneFlags.CLONE_NEWTIME)
#: The highest exit signal clone3 accepts (_NSIG).
MAX_EXIT_SIGNAL = 64


def sys_clone3(proc, cpu, args, size, *_):
    """Implements clone3(2) as clone(2), with its own argument checks; pidfds,
    cgroups and chosen tids are not offered (ENOSYS, EINVAL)."""
    if size < CLONE_ARGS_SIZE_VER0:
        return -Errno.EINVAL
    if size > PAGE_SIZE:
        return -Errno.E2BIG
    raw = read_bytes(proc.space, args, size)
    if any(raw[_CLONE_ARGS.size:]):
        return -Errno.E2BIG        # fields this kernel does not know, set
    (flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
     set_tid_size, cgroup) = _CLONE_ARGS.unpack(raw[:_CLONE_ARGS.size].ljust(_CLONE_ARGS.size, b"\0"))
    if exit_signal > MAX_EXIT_SIGNAL or flags & CSIGNAL or set_tid_size or set_tid:
        return -Errno.EINVAL
    if (stack == 0) != (stack_size == 0):
        return -Errno.EINVAL
    if flags & (CloneFlags.CLONE_THREAD | CloneFlags.CLONE_PARENT) and exit_signal:
        return -Errno.EINVAL
    if flags & _CLONE3_UNSUPPORTED:
        proc.log("kvmdune: clone3 with CLONE_PIDFD, CLONE_INTO_CGROUP or CLONE_NEWTIME "
                 "is not supported: ENOSYS")
        return -Errno.ENOSYS
    return _clone(proc, CloneRequest(flags, stack + stack_size if stack else 0, parent_tid,
                                     child_tid, tls, exit_signal))


def sys_arch_prctl(proc, cpu, code, address, *_):
    """Implements arch_prctl(2): FS/GS bases of the guest, never of the VMM."""
    if code in (ArchPrctlCode.ARCH_SET_FS, ArchPrctlCode.ARCH_SET_GS):
        if address >= USER_SPACE_END:
            return -Errno.EPERM
        if code == ArchPrctlCode.ARCH_SET_FS:
            cpu.fs_base = address
        else:
            cpu.gs_base = address
        return 0
    if code in (ArchPrctlCode.ARCH_GET_FS, ArchPrctlCode.ARCH_GET_GS):
        value = cpu.fs_base if code == ArchPrctlCode.ARCH_GET_FS else cpu.gs_base
        write_u64(proc.space, address, value)
        return 0
    return -Errno.EINVAL


def sys_set_tid_address(proc, cpu, tidptr, *_):
    """Implements set_tid_address(2): remembered for the thread's exit (emulated:
    the host kernel never learns a guest address); returns the thread id."""
    task = proc.task
    task.clear_child_tid = tidptr
    return task.tid


#: sizeof(struct robust_list_head).
ROBUST_LIST_HEAD_SIZE = 24


def sys_set_robust_list(proc, cpu, head, length, *_):
    """Implements set_robust_list(2): remembered, and walked when the thread dies
    (futex.py); never registered with the host kernel."""
    if length != ROBUST_LIST_HEAD_SIZE:
        return -Errno.EINVAL
    proc.task.robust_list = head
    return 0


def sys_get_robust_list(proc, cpu, pid, head_ptr, len_ptr, *_):
    """Implements get_robust_list(2) for the process's own threads (0: the caller);
    another process's list is out of reach (EPERM)."""
    task = proc.task if pid == 0 else proc.threads.tasks.get(pid)
    if task is None:
        return -Errno.EPERM if _process_exists(pid) else -Errno.ESRCH
    write_u64(proc.space, head_ptr, task.robust_list)
    write_u64(proc.space, len_ptr, ROBUST_LIST_HEAD_SIZE)
    return 0


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def sys_rseq(proc, cpu, *_):
    """rseq(2) is not offered (glibc then does without)."""
    return -Errno.ENOSYS


def sys_gettid(proc, cpu, *_):
    """Implements gettid(2): the thread's id is its host thread's (the process id
    for the thread the process started with)."""
    return proc.task.tid


def sys_prctl(proc, cpu, option, arg2, arg3, arg4, arg5, _):
    """Implements the harmless prctl(2) options for the guest itself; the rest (which
    would change the VMM process: seccomp, dumpable, no_new_privs, ...) are refused."""
    PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_SET_NAME, PR_GET_NAME = 1, 2, 15, 16
    if option == PR_SET_NAME:
        name = comm_from_user(read_bytes(proc.space, arg2, TASK_COMM_LEN))
        task = proc.task
        if task.tid != os.getpid():
            task.comm = name          # names the thread, not the process (as Linux)
            return 0
        proc.comm = name
        show_on_host(proc.comm)
        return 0
    if option == PR_GET_NAME:
        name = proc.task.comm if proc.task.tid != os.getpid() else None
        write_bytes(proc.space, arg2, (name or proc.comm).ljust(TASK_COMM_LEN, b"\0"))
        return 0
    if option == PR_GET_PDEATHSIG:
        write_u32(proc.space, arg2, getattr(proc, "pdeathsig", 0))
        return 0
    if option == PR_SET_PDEATHSIG:
        proc.pdeathsig = arg2
        return 0
    if option in (PrctlOption.PR_SET_THP_DISABLE, PrctlOption.PR_GET_THP_DISABLE):
        return _thp_disable(proc.mm, option, arg2, arg3, arg4, arg5)
    return -Errno.EINVAL


def _thp_disable(mm, option, arg2, arg3, arg4, arg5):
    """PR_SET_THP_DISABLE / PR_GET_THP_DISABLE (Linux 6.18's, with
    PR_THP_DISABLE_EXCEPT_ADVISED) on the guest's own memory map (thp.py)."""
    if option == PrctlOption.PR_GET_THP_DISABLE:
        return -Errno.EINVAL if arg2 or arg3 or arg4 or arg5 else mm.thp_disabled
    if arg4 or arg5 or arg3 & ~PR_THP_DISABLE_EXCEPT_ADVISED or not arg2 and arg3:
        return -Errno.EINVAL
    mm.thp_disabled = (1 | arg3) if arg2 else 0
    return 0


def sys_personality(proc, cpu, persona, *_):
    """Implements personality(2) as the guest's own state (never the VMM's): the
    query (0xffffffff), and PER_LINUX with or without ADDR_NO_RANDOMIZE, which the
    next execve honours (setarch -R). Other domains and flags are refused."""
    old = proc.personality
    persona &= 0xFFFF_FFFF
    if persona == PERSONALITY_QUERY:
        return old
    if persona & ~PersonalityFlags.ADDR_NO_RANDOMIZE:
        return -Errno.EINVAL
    proc.personality = persona
    return old
