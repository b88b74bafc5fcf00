"""Calls that name a path for reading (stat, lstat, open, access, getxattr,
lgetxattr, listxattr, llistxattr) as real programs see them: under ``run`` they
match the native run byte for byte, at their edges too (sizes, names, unmapped
buffers); under the sandbox the fast path gives the same answer as the slow one
(the gate in Python) for a corpus of paths that try to get out of the read roots
(symlinks, "..", absolute paths, /proc, a hard link to and a symlink beside a
single-file root, a symlink given as a root, ".." after a symlink that the gate
and the kernel resolve differently), and what lies beneath the read roots,
single-file ones included, is served natively."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from .conftest import FAST_SYSCALLS, PATCH_SITES, run_native, vmm_env

pytestmark = pytest.mark.kvm

#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True

ATTRIBUTE = "user.kvmdune"
ROUNDS = 200
#: The calls the loops make, which the fast path must serve.
LOOP_CALLS = ("open", "openat", "stat", "lstat", "newfstatat", "getxattr", "lgetxattr",
              "listxattr", "llistxattr", "readlink")
VMM_SERVED = re.compile(rb"served by the VMM: ([^\n]*)")


def run_dune(argv, *options, vmm: str = "run", env=None, **kwargs) -> subprocess.CompletedProcess:
    """``kvmdune VMM options -- argv`` on this test's system-call path (``env``:
    exactly this environment instead)."""
    return subprocess.run([sys.executable, "-m", "kvmdune", vmm, *options, "--", *argv],
                          capture_output=True, timeout=300,
                          env=vmm_env(None) if env is None else env, **kwargs)


def vmm_served(stderr: bytes) -> dict[str, int]:
    """--syscall-stats' count of the calls the VMM served, by name (every process)."""
    counts: dict[str, int] = {}
    for found in VMM_SERVED.finditer(stderr):
        for item in found.group(1).decode().split(", "):
            name, count = item.rsplit(" ", 1)
            counts[name] = counts.get(name, 0) + int(count)
    return counts


def _set_attribute(path: pathlib.Path, value: bytes) -> None:
    try:
        os.setxattr(path, ATTRIBUTE, value)
    except OSError as exc:
        pytest.skip(f"no user extended attributes here: {exc}")


@pytest.fixture
def corpus():
    """A tree the sandbox's user (nobody) can reach: a directory read root
    (``allowed``), a single-file one (``single/passwd``) with a hard link and a
    symlink beside it, denied files, symlinks in and out, and a symlink (``linkroot``,
    to the denied directory) given as a root."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="kvmdune-path-calls-", dir="/tmp"))
    base.chmod(0o755)
    for directory in ("allowed", "allowed/sub", "allowed/sub/deeper", "denied", "single"):
        (base / directory).mkdir(mode=0o755)
    for name, text in (("allowed/file", "in\n"), ("allowed/sub/inner", "inner\n"),
                       ("denied/file", "out\n"), ("single/passwd", "root:x:0:0\n"),
                       ("single/other", "other\n"), ("top", "top\n")):
        (base / name).write_text(text)
        (base / name).chmod(0o644)
        _set_attribute(base / name, name.encode())
    os.link(base / "single/passwd", base / "single/hard")
    for link, target in (("allowed/link_in", "file"), ("allowed/link_out", "../denied/file"),
                         ("allowed/link_abs_out", str(base / "denied/file")),
                         ("allowed/link_dir_out", "../denied"),
                         ("allowed/link_single", "../single/passwd"),
                         ("allowed/deep", "sub/deeper"),
                         ("single/alias", "passwd"),
                         ("outside_link", str(base / "allowed/file")),
                         ("linkroot", "denied")):
        (base / link).symlink_to(target)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def probe_paths(base: pathlib.Path) -> list[str]:
    """What the corpus's probe asks about, from the ``allowed`` directory."""
    relative = ["file", "sub/inner", "sub/../file", "../denied/file", "link_in", "link_out",
                "link_abs_out", "link_dir_out/file", "link_dir_out/../file",
                "link_dir_out/../top", "link_single", "sub/../../denied/file", "missing",
                "deep/../../file"]
    absolute = ["allowed/file", "denied/file", "single/passwd", "single/other",
                "single/hard", "single/alias", "single/passwd/", "single/passwd/.",
                "single//passwd", "single/./passwd", "single/../single/passwd",
                "allowed/../single/passwd", "allowed/deep/../../file", "outside_link", "linkroot", "linkroot/file",
                "top", "allowed/link_dir_out/../top", "single/missing", "allowed/missing"]
    return (relative + [f"{base}/{path}" for path in absolute]
            + [str(base), "/", f"/proc/self/root{base}/denied/file",
               f"/proc/self/root{base}/single/passwd", "/proc/self/cwd/file",
               "/proc/self/cwd/../denied/file", "/" + "a/" * 2100 + "x"])


def sandbox_options(base: pathlib.Path, program: str) -> list[str]:
    return ["--quiet", "--allow-read", str(base / "allowed"),
            "--allow-read", str(base / "single/passwd"), "--allow-read", str(base / "linkroot"),
            "--allow-exec", program]


def test_path_calls_match_native(compiled, corpus):
    program = compiled[("pathcalls", "static")]
    paths = [str(corpus / name) for name in ("allowed/file", "allowed/link_in", "allowed/sub",
                                             "allowed/missing", "denied/file", "linkroot")]
    for argv in ([program, *paths], [program, "edges", str(corpus / "allowed/file")],
                 [program, "edges", str(corpus / "allowed/link_in")]):
        native = run_native(argv)
        dune = run_dune(argv)
        assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
        assert dune.returncode == native.returncode == 0
        if argv[1] != "edges":
            assert f"{paths[0]} getxattr: 12\n  allowed/file\n".encode() in dune.stdout


def test_sandbox_path_decisions_match_the_gate(compiled, corpus, syscall_path):
    program = str(corpus / "allowed/pathcalls")
    shutil.copy(compiled[("pathcalls", "static")], program)
    argv, options = [program, *probe_paths(corpus)], sandbox_options(corpus, program)
    dune = run_dune(argv, *options, vmm="sandbox", cwd=corpus / "allowed")
    slow_env = {**os.environ, FAST_SYSCALLS: "0", PATCH_SITES: "0"}
    gate = run_dune(argv, *options, vmm="sandbox", cwd=corpus / "allowed", env=slow_env)
    assert dune.returncode == gate.returncode == 0, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.stdout == gate.stdout
    out = dune.stdout.decode()
    for allowed in ("file", f"{corpus}/single/passwd", "link_single", f"{corpus}/outside_link"):
        assert f"\n{allowed} open: 0\n" in "\n" + out
    assert f"{corpus}/single/passwd getxattr: 13\n  single/passwd\n" in out
    # "deep/../../file" is the root's own file to the kernel, but outside to the
    # gate (which takes ".." away by name first): refused, on every path.
    for denied in ("deep/../../file", "../denied/file", "link_out", "link_abs_out", "link_dir_out/file",
                   "sub/../../denied/file", f"{corpus}/denied/file", f"{corpus}/single/other",
                   f"{corpus}/single/hard", f"{corpus}/linkroot/file",
                   f"{corpus}/allowed/link_dir_out/../top", f"/proc/self/root{corpus}/denied/file"):
        for call in ("open", "stat", "getxattr", "listxattr"):
            assert f"\n{denied} {call}: -1 EACCES\n" in "\n" + out, (denied, call)
    # The symlink beside the single-file root: followed it is the root; itself, not.
    assert f"\n{corpus}/single/alias open: 0\n" in "\n" + out
    assert f"\n{corpus}/single/alias lstat: -1 EACCES\n" in "\n" + out
    # What the sandbox allows, it answers as Linux does (outside_link itself is not
    # allowed: only followed).
    allowed_paths = ["file", "sub/inner", f"{corpus}/single/passwd", "link_single"]
    native = run_native([program, *allowed_paths], cwd=corpus / "allowed")
    dune = run_dune([program, *allowed_paths], *options, vmm="sandbox", cwd=corpus / "allowed")
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("vmm", ["run", "sandbox"])
def test_path_calls_are_served_natively(compiled, corpus, syscall_path, vmm):
    program = str(corpus / "allowed/pathcalls")
    shutil.copy(compiled[("pathcalls", "static")], program)
    options = sandbox_options(corpus, program) if vmm == "sandbox" else []
    # Beneath the directory root (by a relative path too), the single-file root, and
    # (following only) symlinks from outside into both.
    loops = [[program, "loop", str(ROUNDS), "file", "sub/inner", f"{corpus}/single/passwd"],
             [program, "follow", str(ROUNDS), "link_single", f"{corpus}/outside_link"]]
    # readlink of two links beneath the directory root (one of them to a file outside
    # it: readlink reads the link itself, as lstat does).
    loops.append([program, "links", str(ROUNDS), "link_in", "link_single"])
    for argv in loops:
        dune = run_dune(argv, *options, "--syscall-stats", vmm=vmm, cwd=corpus / "allowed")
        assert dune.returncode == 0 and dune.stdout == f"{ROUNDS} rounds\n".encode(), \
            dune.stderr.decode(errors="replace")[-2000:]
        if syscall_path == "slow":
            assert b"the fast path is off" in dune.stderr
            continue
        served = vmm_served(dune.stderr)
        assert VMM_SERVED.search(dune.stderr), dune.stderr.decode(errors="replace")[-2000:]
        # A few reach the VMM while it holds the process's lock (start-up, exit).
        for call in LOOP_CALLS:
            assert served.get(call, 0) < ROUNDS // 10, (call, served)


def test_a_read_root_holding_proc_leaves_proc_to_the_vmm(compiled, corpus, syscall_path):
    """Beneath a root that holds /proc, a relative path from /proc reaches the VMM's
    own /proc/self: the VMM answers (as on the slow path), never the host's walk."""
    program = str(corpus / "allowed/pathcalls")
    shutil.copy(compiled[("pathcalls", "static")], program)
    argv, options = [program, "self/status"], ["--quiet", "--allow-read", "/proc",
                                               "--allow-exec", program]
    dune = run_dune(argv, *options, vmm="sandbox", cwd="/proc")
    slow_env = {**os.environ, FAST_SYSCALLS: "0", PATCH_SITES: "0"}
    gate = run_dune(argv, *options, vmm="sandbox", cwd="/proc", env=slow_env)
    # The file the VMM makes for it is new each run: its size and inode differ.
    varying = re.compile(rb"size \d+|ino \d+")
    assert varying.sub(b"", dune.stdout) == varying.sub(b"", gate.stdout), \
        dune.stderr.decode(errors="replace")[-2000:]
    assert b"self/status read: 16\n  Name:.pathcalls.\n" in dune.stdout


#: stat and lstat of each path this many times per phase (restat.c).
RESTAT_ROUNDS = 50
REMEMBERED_STATS = re.compile(rb"(\d+) stats answered from the sandbox's earlier check by name")


def _restat_tree(base: pathlib.Path) -> list[str]:
    """A single-file read root (``one/file``, one link), a denied file beside it and a
    symlink to the root from a directory root: the paths the phases stat."""
    shutil.rmtree(base, ignore_errors=True)
    for directory in (base, base / "allowed", base / "one"):
        directory.mkdir(mode=0o755)
    for name, text in (("one/file", "first\n"), ("one/denied", "denied, and longer\n")):
        (base / name).write_text(text)
        (base / name).chmod(0o644)
    (base / "allowed/link").symlink_to("../one/file")
    return [str(base / "one/file"), str(base / "allowed/link")]


def _relink(link: pathlib.Path, target: str) -> None:
    link.unlink()
    link.symlink_to(target)


def _replace_root(base: pathlib.Path) -> None:
    """Another file (inode, size) under the root's name."""
    (base / "one/new").write_text("second, longer\n")
    (base / "one/new").chmod(0o644)
    os.replace(base / "one/new", base / "one/file")


def _move_root_out(base: pathlib.Path) -> None:
    """The root's file renamed to a name outside the roots (same inode, same mount),
    and the symlink after it."""
    os.rename(base / "one/file", base / "one/moved")
    _relink(base / "allowed/link", "../one/moved")


#: What changes between the phases, in order.
RESTAT_CHANGES = (_replace_root, _move_root_out,
                  lambda base: _relink(base / "allowed/link", "../one/denied"))


def _restat_phases(argv: list[str], native_argv: list[str], base: pathlib.Path,
                   env: dict[str, str]) -> tuple[list[tuple[str, str]], bytes]:
    """restat's answers in each phase, the tree made afresh and changed between the
    phases (RESTAT_CHANGES), each beside a native run's answers in the same state; and
    restat's stderr."""
    _restat_tree(base)
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=base / "allowed", env=env)
    phases = []
    try:
        for change in (*RESTAT_CHANGES, None):
            lines = []
            while (line := process.stdout.readline().decode()) not in ("--\n", ""):
                lines.append(line)
            native = run_native(native_argv, stdin=subprocess.DEVNULL)
            phases.append(("".join(lines), native.stdout.decode().removesuffix("--\n")))
            if change is None:
                break
            change(base)
            process.stdin.write(b"\n")
            process.stdin.flush()
        process.stdin.close()
        stderr = process.stderr.read()
    finally:
        process.kill()
        process.wait()
    return phases, stderr


def _decisions(answers: str) -> list[str]:
    """Each answer's verdict: the errno name, or "ok"."""
    return [line.split(": ")[1].split()[1] if ": -1 " in line else "ok"
            for line in answers.splitlines()]


def test_stats_remembered_by_name_follow_the_file(compiled):
    """The sandbox remembers the stat answer of a path it accepted by name (a
    single-file root, a symlink to it) with the file's identity (namedstat.h): once
    the root's name holds another file, once the file is renamed out of the roots and
    the symlink follows it (same inode, same mount: only its change time tells), and
    once the symlink points to a denied file, the decisions are the gate's, and what
    is allowed is answered as Linux answers it in the same state, byte for byte."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="kvmdune-restat-", dir="/tmp"))
    program = str(base.parent / f"{base.name}-restat")
    shutil.copy(compiled[("restat", "static")], program)
    try:
        paths = [str(base / "one/file"), str(base / "allowed/link")]
        argv = [program, str(RESTAT_ROUNDS), *paths]
        options = ["--quiet", "--syscall-stats", "--allow-read", str(base / "allowed"),
                   "--allow-read", paths[0], "--allow-exec", program]
        command = [sys.executable, "-m", "kvmdune", "sandbox", *options, "--", *argv]
        fast, stderr = _restat_phases(command, argv, base,
                                      {**os.environ, FAST_SYSCALLS: "1", PATCH_SITES: "1"})
        gate, _ = _restat_phases(command, argv, base,
                                 {**os.environ, FAST_SYSCALLS: "0", PATCH_SITES: "0"})
    finally:
        shutil.rmtree(base, ignore_errors=True)
        os.unlink(program)
    context = stderr.decode(errors="replace")[-3000:]
    assert len(fast) == len(RESTAT_CHANGES) + 1, context
    assert [_decisions(answers) for answers, _ in fast] == \
        [_decisions(answers) for answers, _ in gate], (fast, gate)
    for answers, native in fast:
        for line, native_line in zip(answers.splitlines(), native.splitlines(), strict=True):
            assert ": -1 " in line or line == native_line, (line, native_line)
    # Before the file leaves the roots everything is allowed; then the symlink to it
    # (renamed out of the roots, then another file) is refused.
    assert _decisions(fast[0][0]) == _decisions(fast[1][0]) == ["ok"] * 4
    for answers, _ in fast[2:]:
        assert f"{paths[1]} stat: -1 EACCES\n" in answers
    assert f"{paths[0]} stat: -1 ENOENT\n" in fast[2][0]
    remembered = sum(int(found) for found in REMEMBERED_STATS.findall(stderr))
    assert remembered >= RESTAT_ROUNDS, context
