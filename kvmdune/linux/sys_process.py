"""Process system calls: exit, execve, fork/vfork/clone, identity, limits, arch_prctl.

A guest process is one VMM process, so process identity (pids, groups, sessions),
wait4 and kill are the host's own and are forwarded; what would touch the VMM
itself (its memory, its FS base, its threads) is emulated.
"""

from __future__ import annotations

import os

from ..machine import Stop
from ..machine.layout import TASK_SIZE
from ..memory import USER_SPACE_END
from .abi import AT_FDCWD, ArchPrctlCode, AtFlags, CloneFlags, Errno, PersonalityFlags
from .aslr import PERSONALITY_QUERY
from .elf import ExecFormatError
from .exit_status import ExitStatus
from .exec import exec_program
from .task_name import TASK_COMM_LEN, comm_from_user, show_on_host
from .uaccess import Fault, read_path, read_string_array, write_u32, write_u64
from .uaccess import read_bytes, write_bytes

#: The total argv+envp size execve accepts (Linux: a quarter of the 8 MiB stack).
ARG_MAX_BYTES = 2 << 20


def sys_exit(proc, cpu, status, *_):
    """Implements exit(2) and exit_group(2) (one thread: the same)."""
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
        new = exec_program(proc.machine, path, argv, envp, personality=proc.personality)
    except ExecFormatError as exc:
        return -exc.errno
    proc.replace_image(new.space, new.mm, new.exe, new.argv, envp, new.loaded.entry,
                       new.loaded.sp, new.loaded.auxv, filename=filename)
    return None


def sys_fork(proc, cpu, *_):
    """Implements fork(2): the child is a new VMM process with its own VM."""
    return proc.fork(vfork=False)


def sys_vfork(proc, cpu, *_):
    """Implements vfork(2) as fork, with the parent waiting for the child's exec/exit."""
    return proc.fork(vfork=True)


def sys_clone(proc, cpu, flags, stack, parent_tid, child_tid, tls, _):
    """Implements clone(2) without CLONE_VM (fork-like), and CLONE_VM|CLONE_VFORK as
    posix_spawn issues it (run as vfork). Threads are not supported yet."""
    if flags & CloneFlags.CLONE_VM and not flags & CloneFlags.CLONE_VFORK:
        proc.log("kvmdune: clone() of a thread (CLONE_VM without CLONE_VFORK) is not "
                 "supported yet: ENOSYS")
        return -Errno.ENOSYS
    if flags & (CloneFlags.CLONE_THREAD | CloneFlags.CLONE_SIGHAND):
        return -Errno.EINVAL
    if flags & CloneFlags.CLONE_SETTLS and tls >= TASK_SIZE:
        return -Errno.EPERM      # what ARCH_SET_FS answers: no child is made
    pid = proc.fork(vfork=bool(flags & CloneFlags.CLONE_VFORK))
    if pid < 0:
        return pid
    if pid == 0:           # in the child
        if stack:
            cpu.regs.rsp = stack
        if flags & CloneFlags.CLONE_SETTLS:
            cpu.fs_base = tls
        if flags & CloneFlags.CLONE_CHILD_SETTID and child_tid:
            _put_tid(proc, child_tid, os.getpid())
        if flags & CloneFlags.CLONE_CHILD_CLEARTID:
            proc.clear_child_tid = child_tid
    elif flags & CloneFlags.CLONE_PARENT_SETTID and parent_tid:
        _put_tid(proc, parent_tid, pid)
    return pid


def _put_tid(proc, address: int, tid: int) -> None:
    """clone's tid words: Linux ignores a fault writing them (the child exists by
    then; neither side's clone fails for it)."""
    try:
        write_u32(proc.space, address, tid)
    except Fault:
        pass


def sys_clone3(proc, cpu, *_):
    """clone3(2) is answered with ENOSYS so that libc falls back to clone(2)."""
    return -Errno.ENOSYS


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
    """Implements set_tid_address(2): remembered, returns the tid."""
    proc.clear_child_tid = tidptr
    return os.getpid()


def sys_set_robust_list(proc, cpu, head, length, *_):
    """Implements set_robust_list(2): one thread, nothing to clean up at exit."""
    return 0 if length == 24 else -Errno.EINVAL


def sys_rseq(proc, cpu, *_):
    """rseq(2) is not offered (glibc then does without)."""
    return -Errno.ENOSYS


def sys_gettid(proc, cpu, *_):
    """Implements gettid(2): the single thread's id is the process id."""
    return os.getpid()


def sys_prctl(proc, cpu, option, arg2, arg3, arg4, arg5, _):
    """Implements the harmless prctl(2) options for the guest itself; the rest (which
    would change the VMM process: seccomp, dumpable, no_new_privs, ...) are refused."""
    PR_SET_PDEATHSIG, PR_GET_PDEATHSIG, PR_SET_NAME, PR_GET_NAME = 1, 2, 15, 16
    if option == PR_SET_NAME:
        proc.comm = comm_from_user(read_bytes(proc.space, arg2, TASK_COMM_LEN))
        show_on_host(proc.comm)
        return 0
    if option == PR_GET_NAME:
        write_bytes(proc.space, arg2, proc.comm.ljust(TASK_COMM_LEN, b"\0"))
        return 0
    if option == PR_GET_PDEATHSIG:
        write_u32(proc.space, arg2, getattr(proc, "pdeathsig", 0))
        return 0
    if option == PR_SET_PDEATHSIG:
        proc.pdeathsig = arg2
        return 0
    return -Errno.EINVAL


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
