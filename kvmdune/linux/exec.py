"""execve: resolving the file (PATH search for the first program, ``#!`` scripts as
binfmt_script runs them, and for the first program execvp's fallback to ``/bin/sh``),
loading it into a fresh address space, and switching the process to it."""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass

from ..machine import Machine
from ..memory import AddressSpace, OutOfGuestMemory
from . import aslr, vdso
from .elf import BINPRM_BUF_SIZE, ELF_MAGIC, ExecFormatError, load_elf, read_shebang
from .loader import LoadedProgram, load_program
from .mm import MemoryMap
from .vdso import HostVdso

#: The shell execvp(3) hands a file that execve refuses with ENOEXEC (glibc's
#: _PATH_BSHELL).
FALLBACK_SHELL = "/bin/sh"

#: binfmt_script may hand a script to an interpreter that is itself a script this
#: many times (BINPRM_MAX_RECURSION).
MAX_INTERPRETER_DEPTH = 4


#: The ELF note libkvmdune links into a program (KVMDUNE_NOTE_OWNER, _DUNE_API).
DUNE_API_NOTE = (b"kvmdune", 1)


def resolve_command(name: str, path_env: str | None = None) -> str:
    """Find a program as a shell does: names with a slash as they are, others on PATH.
    Raises ExecFormatError(ENOENT) when nothing is found."""
    if "/" in name:
        return name
    found = shutil.which(name, mode=os.F_OK, path=path_env if path_env is not None
                         else os.environ.get("PATH", os.defpath))
    if found is None:
        raise ExecFormatError(2, f"{name}: command not found", name)
    return found


def _read_head(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(BINPRM_BUF_SIZE)
    except FileNotFoundError as exc:
        raise ExecFormatError(2, f"{path}: No such file or directory", path) from exc
    except IsADirectoryError as exc:
        raise ExecFormatError(13, f"{path}: Is a directory", path) from exc
    except PermissionError as exc:
        raise ExecFormatError(13, f"{path}: Permission denied", path) from exc
    except OSError as exc:
        raise ExecFormatError(exc.errno or 8, f"{path}: {exc.strerror}", path) from exc


def resolve_script(path: str, argv: list[bytes]) -> tuple[str, list[bytes]]:
    """Follow ``#!`` lines: the file to load and the argv it gets."""
    for _ in range(MAX_INTERPRETER_DEPTH + 1):
        if not os.access(path, os.X_OK) and os.path.exists(path) and not os.path.isdir(path):
            raise ExecFormatError(13, f"{path}: Permission denied", path)
        shebang = read_shebang(_read_head(path))
        if shebang is None:
            return path, argv
        interpreter, argument = shebang
        argv = ([interpreter.encode()] + ([argument.encode()] if argument else [])
                + [path.encode()] + argv[1:])
        path = interpreter
    raise ExecFormatError(40, f"{path}: too many levels of #! interpreters", path)


@dataclass(frozen=True)
class NewImage:
    """A program loaded and ready to switch to: its address space and memory map,
    where it starts, the file it runs (``exe``, symlinks resolved) and the argv it
    gets (a script's: the interpreter's, with the script's path)."""

    space: AddressSpace
    mm: MemoryMap
    loaded: LoadedProgram
    exe: str
    argv: list[bytes]


def guest_vdso(machine: Machine) -> HostVdso | None:
    """The vDSO to give a program on this machine (vdso.py says when there is one)."""
    if not vdso.wanted() or not machine.platform.guest_reads_host_tsc:
        return None
    return vdso.host_vdso()


def exec_program(machine: Machine, path: str, argv: list[bytes], envp: list[bytes],
                 personality: int | None = None, patch_sites: bool = False) -> NewImage:
    """Load ``path`` into a new address space, as execve(2) does. The layout is
    randomized as Linux would for a process of ``personality`` (by default the
    VMM's own). Raises ExecFormatError, leaving the current image untouched."""
    exe, argv = resolve_script(path, argv)
    image = load_elf(exe)
    # A missing interpreter fails before anything changes; the loader maps this copy.
    interp = load_elf(image.interp) if image.interp is not None else None
    space = machine.new_address_space()
    mm = MemoryMap(space)
    # A program built against the Dune API keeps its sites: its user code and roots
    # map no call ring for a patched site to reach (dune/include/kvmdune/hypercall.h).
    mm.patch_sites = patch_sites and (DUNE_API_NOTE not in image.notes)
    try:
        rnd = aslr.Randomization.for_exec(aslr.host_personality() if personality is None
                                          else personality)
        loaded = load_program(mm, image, argv, envp, execfn=path.encode(), rnd=rnd,
                              interp=interp, vdso=guest_vdso(machine))
    except OutOfGuestMemory as exc:
        space.close()
        raise ExecFormatError(
            errno.ENOMEM, f"does not fit in {machine.memory.size >> 20} MiB of guest memory "
            "(kvmdune run --memory gives more)", path) from exc
    except BaseException:
        space.close()
        raise
    # realpath: a path pinned by the sandbox (/proc/self/fd/N) names the real file.
    return NewImage(space, mm, loaded, os.path.realpath(exe), argv)


def exec_command(machine: Machine, path: str, argv: list[bytes], envp: list[bytes],
                 patch_sites: bool = False) -> tuple[str, NewImage]:
    """The first program, started as execvp(3) starts it: a file that execve refuses
    with ENOEXEC because it is neither ELF nor ``#!`` script (a shell script without
    the line) runs as ``/bin/sh PATH ARGS...``. Returns the path finally executed
    (the task is named after it) and its image. (A guest's own execve gets the
    ENOEXEC, as from the kernel.)"""
    try:
        return path, exec_program(machine, path, argv, envp, patch_sites=patch_sites)
    except ExecFormatError as exc:
        if exc.errno != errno.ENOEXEC or _read_head(path).startswith(ELF_MAGIC):
            raise                # an ELF kvmdune cannot run: say why, not what sh says
    shell_argv = [FALLBACK_SHELL.encode(), path.encode("utf-8", "surrogateescape"), *argv[1:]]
    return FALLBACK_SHELL, exec_program(machine, FALLBACK_SHELL, shell_argv, envp,
                                        patch_sites=patch_sites)
