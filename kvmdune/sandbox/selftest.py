"""``kvmdune selftest --hostile``: the containment corpus (``corpus/hostile.c``, one
attack per case) run under ``kvmdune sandbox``; each case must be contained —
denied or faulted, never successful — with the supervisor alive and nothing outside
the allowed paths changed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

CORPUS = Path(__file__).parent / "corpus" / "hostile.c"
#: Statuses that mean a limit ended the attack (128 + SIGKILL, SIGXCPU, SIGXFSZ, SIGSYS).
LIMIT_STATUSES = {137: "killed at a limit", 152: "killed at the CPU limit",
                  153: "killed at the file-size limit", 159: "killed by policy"}


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    expected: str = "denied or faulted"


@dataclass(frozen=True)
class Outcome:
    case: Case
    contained: bool
    observed: str
    status: int | None = None       # the sandbox's exit status (None: it timed out)


def build_corpus() -> Path:
    """Compile the corpus (gcc -static) into the cache, keyed by its source."""
    source = CORPUS.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvmdune"
    cache.mkdir(parents=True, exist_ok=True)
    binary = cache / f"hostile-{hashlib.sha256(source).hexdigest()[:16]}"
    if not binary.exists():
        partial = binary.with_suffix(".partial")
        subprocess.run(["gcc", "-O1", "-static", "-w", "-o", str(partial), str(CORPUS)],
                       check=True)
        partial.rename(binary)
    return binary


def _vmm_addresses() -> list[str]:
    """Addresses where a Python process like the VMM keeps its heap, stack, libraries."""
    wanted = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            name = fields[-1] if len(fields) > 5 else ""
            if name in ("[heap]", "[stack]") or "python" in name or "libc" in name:
                wanted.append("0x" + fields[0].split("-")[0])
    return wanted[:12]


def cases(area: Path, allowed: Path, secret: Path) -> list[Case]:
    writable = ("--allow-write", str(allowed))
    dotdot = os.path.relpath(secret, allowed)
    return [
        Case("vmm-pointers", tuple(_vmm_addresses()), expected="EFAULT"),
        Case("bad-addresses", expected="EFAULT"),
        Case("descriptors", expected="3..1023 closed"),
        Case("int80", expected="fault"),
        Case("sysenter", expected="fault"),
        Case("vsyscall", expected="fault"),
        Case("far-jump-32", expected="fault"),
        Case("privileged", expected="fault"),
        Case("write-trampoline", expected="fault"),
        Case("write-gdt", expected="fault"),
        Case("write-idt", expected="fault"),
        Case("call-ring", expected="fault"),
        Case("self-modifying", expected="fault"),
        Case("kill-parent", expected="EPERM"),
        Case("kill-all", expected="EPERM"),
        Case("stop-group", expected="EPERM"),
        Case("ptrace", expected="refused"),
        Case("prctl", expected="refused"),
        Case("seccomp", expected="refused"),
        Case("path", (str(secret), "absolute path outside"), writable, "EACCES"),
        Case("path", (f"{allowed}/{dotdot}", "../ out of the allowed directory"), writable,
             "EACCES"),
        Case("path", (f"{allowed}/outside-link", "symlink to outside"), writable, "EACCES"),
        Case("path", (f"/proc/self/root{secret}", "/proc/self/root"), writable, "EACCES"),
        Case("path", ("/proc/self/mem", "/proc/self/mem"), writable, "EACCES"),
        Case("vmm-descriptor-paths", expected="ENOENT"),
        Case("path", (f"/proc/{os.getpid()}/mem", "/proc/PID of another process"), writable,
             "EACCES"),
        Case("openat-dotdot", (str(allowed), dotdot), writable, "EACCES"),
        Case("symlink-swap", (str(allowed), str(secret)), writable, "never the secret"),
        Case("unlink-swap", (str(allowed), str(area / "outside")), writable,
             "the outside victim untouched"),
        Case("hardlink", (str(allowed), str(secret)), writable, "EACCES"),
        Case("rename-out", (str(allowed), str(area)), writable, "EACCES"),
        Case("fork-bomb", options=("--max-procs", "40"), expected="EAGAIN at the limit"),
        Case("thread-bomb", options=("--max-procs", "40"), expected="EAGAIN at the limit"),
        Case("unmap-under-thread", expected="the thread faults, EFAULT"),
        Case("memory-bomb", options=("--mem", "256M"), expected="killed at the limit"),
        Case("cpu-loop", options=("--cpu", "1"), expected="killed at the CPU limit"),
        Case("disk-fill", (f"{allowed}/fill",), writable + ("--max-fsize", "1M"),
             "stopped at the file-size limit"),
        Case("huge-args", options=("--allow-exec", "/bin/true", "--allow-exec", "/usr/bin/true"),
             expected="E2BIG"),
    ]


def _snapshot(area: Path, allowed: Path) -> dict[str, str]:
    """Every file outside the allowed directory, with a digest of its contents."""
    state = {}
    for root, dirs, files in os.walk(area):
        if Path(root) == allowed or allowed in Path(root).parents:
            dirs[:] = []
            continue
        for name in files:
            path = Path(root) / name
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def run_case(binary: Path, case: Case, area: Path, allowed: Path,
             env: dict[str, str] | None = None) -> Outcome:
    before = _snapshot(area, allowed)
    command = [sys.executable, "-m", "kvmdune", "sandbox", *case.options, "--", str(binary),
               case.name, *case.args]
    try:
        result = subprocess.run(command, capture_output=True, timeout=120, text=True,
                                errors="replace", env=env)
    except subprocess.TimeoutExpired:
        return Outcome(case, False, "timed out (the supervisor did not stop it)")
    return replace(_judge(case, result, _snapshot(area, allowed) != before),
                   status=result.returncode)


def _judge(case: Case, result: subprocess.CompletedProcess, changed: bool) -> Outcome:
    line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if "Traceback" in result.stderr:
        return Outcome(case, False, "the supervisor crashed: " + result.stderr.splitlines()[-1])
    if changed:
        return Outcome(case, False, "files outside the allowed paths changed")
    if line.startswith("ESCAPED"):
        return Outcome(case, False, line)
    if line.startswith("contained"):
        return Outcome(case, True, line.removeprefix("contained: "))
    if result.returncode == -9:
        return Outcome(case, True, "killed at the hard limit (SIGKILL)")
    if result.returncode in LIMIT_STATUSES:
        return Outcome(case, True, f"{LIMIT_STATUSES[result.returncode]} "
                                   f"(status {result.returncode})")
    return Outcome(case, False, f"status {result.returncode}: {result.stderr.strip()[-200:]}")


def prepare_area() -> tuple[Path, Path, Path]:
    """A scratch tree the unprivileged sandbox user can reach: an allowed directory
    (with a data file and a symlink to outside) and a secret beside it."""
    area = Path(tempfile.mkdtemp(prefix="kvmdune-hostile-", dir="/tmp"))
    area.chmod(0o755)
    allowed = area / "allowed"
    allowed.mkdir()
    allowed.chmod(0o777)
    (allowed / "data.txt").write_text("allowed data\n")
    (allowed / "data.txt").chmod(0o666)
    secret = area / "secret.txt"
    secret.write_text("secret\n")
    secret.chmod(0o644)
    os.symlink(secret, allowed / "outside-link")
    outside = area / "outside"       # writable by anyone: only the policy protects it
    outside.mkdir()
    outside.chmod(0o777)
    (outside / "victim").write_text("victim\n")
    (outside / "victim").chmod(0o666)
    return area, allowed, secret


def run_corpus(progress: Callable[[str], None] = lambda text: None,
               env: dict[str, str] | None = None) -> list[Outcome]:
    """Every case under ``kvmdune sandbox``, started with ``env`` (None: this
    process's environment)."""
    area, allowed, secret = prepare_area()
    # Inside the scratch tree: the sandbox user cannot reach the (root-only) cache.
    binary = area / "hostile"
    shutil.copy(build_corpus(), binary)
    binary.chmod(0o755)
    try:
        outcomes = []
        for case in cases(area, allowed, secret):
            progress(case.name)
            outcomes.append(run_case(binary, case, area, allowed, env))
        return outcomes
    finally:
        shutil.rmtree(area, ignore_errors=True)


def format_table(outcomes: list[Outcome]) -> str:
    rows = [("case", "expected", "observed", "")]
    for outcome in outcomes:
        label = outcome.case.name + (f" ({outcome.case.args[1]})" if outcome.case.name == "path"
                                     else "")
        verdict = ("ok" if outcome.contained else "ESCAPED"
                   if outcome.observed.startswith("ESCAPED") else "FAILED")
        rows.append((label, outcome.case.expected, outcome.observed, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}"
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    contained = sum(o.contained for o in outcomes)
    lines.append(f"{contained} of {len(outcomes)} contained")
    return "\n".join(lines)
