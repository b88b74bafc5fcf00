"""Acceptance setup: C programs compiled here, static, static-pie and dynamic; and
every test that runs a guest runs on the fast system-call path through `syscall`
(KVMDUNE_FAST_SYSCALLS=1, KVMDUNE_PATCH_SITES=0) and on the slow one
(KVMDUNE_FAST_SYSCALLS=0, every call exits to the VMM; nothing is patched without the
fast path). Modules that set ``PATCHED_PATH`` also run with the call sites patched
(both variables 1: the default). Patching changes only the bytes mapped, how a call
enters the ring, and where no signal frame may be built; what is served, and how, is
the fast path's. So the patched path runs where those are exercised: the patched
sites' own tests, C programs of each link type, the fast path's, threads, signals
and /proc, the system-call fuzzers; test_everyday's programs run on the default
(patched) path too. (A third path everywhere added a third to the suite's time.)"""

from __future__ import annotations

import os
import re
import signal
import pathlib
import subprocess
import sys

import pytest

PROGRAMS = pathlib.Path(__file__).parent / "programs"
LINKS = {"static": ["-static"], "static-pie": ["-static-pie"], "dynamic": []}

#: The variables the runner reads at start (RunOptions); the VMM subprocesses inherit them.
FAST_SYSCALLS = "KVMDUNE_FAST_SYSCALLS"
PATCH_SITES = "KVMDUNE_PATCH_SITES"
SYSCALL_PATHS = {"patched": {FAST_SYSCALLS: "1", PATCH_SITES: "1"},
                 "fast": {FAST_SYSCALLS: "1", PATCH_SITES: "0"},
                 "slow": {FAST_SYSCALLS: "0", PATCH_SITES: "0"}}


#: Runs only these paths (comma-separated names of SYSCALL_PATHS) when set: CI's
#: second pass through the resident start-up path, whose concern is how a run is
#: started and ended, not how its calls are served, takes the fast one.
ONLY_PATHS = "KVMDUNE_TEST_SYSCALL_PATHS"


def paths_for(module) -> list[str]:
    """The system-call paths a module's guest tests run on (see above)."""
    names = [name for name in SYSCALL_PATHS
             if name != "patched" or getattr(module, "PATCHED_PATH", False)]
    only = os.environ.get(ONLY_PATHS)
    if only:
        wanted = set(only.split(","))
        if not wanted <= set(SYSCALL_PATHS):
            raise pytest.UsageError(f"{ONLY_PATHS}={only}: the paths are "
                                    f"{', '.join(SYSCALL_PATHS)}")
        names = [name for name in names if name in wanted]
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that runs guest code (marked ``kvm``) once per system-call path of
    its module, except in modules that set ``DEFAULT_SYSCALL_PATH_ONLY`` (they run
    on the default)."""
    if getattr(metafunc.module, "DEFAULT_SYSCALL_PATH_ONLY", False):
        return
    if ("syscall_path" in metafunc.fixturenames
            and metafunc.definition.get_closest_marker("kvm") is not None):
        metafunc.parametrize("syscall_path", paths_for(metafunc.module), indirect=True)


@pytest.fixture(autouse=True)
def syscall_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Sets the system-call path's variables for this test (and the VMMs it starts);
    None for the tests that run no guest."""
    name = getattr(request, "param", None)
    if name is None:
        return None
    for variable, value in SYSCALL_PATHS[name].items():
        monkeypatch.setenv(variable, value)
    return name


#: A directory of programs built beforehand by ``build_programs`` (scripts/test-on-svm
#: builds them on the host, where gcc is not emulated); used when it has them all.
PREBUILT_PROGRAMS = "KVMDUNE_TEST_PROGRAMS"


def build_programs(out: pathlib.Path, build: bool = True) -> dict[tuple[str, str], str]:
    """Every program in PROGRAMS, linked each way, in ``out`` (built unless ``build``
    is False: then only where they would be)."""
    binaries = {}
    for source in sorted(PROGRAMS.glob("*.c")):
        for link, flags in LINKS.items():
            target = out / f"{source.stem}-{link}"
            if build:
                subprocess.run(["gcc", "-O1", "-o", str(target), str(source), *flags],
                               check=True)
            binaries[(source.stem, link)] = str(target)
    return binaries


@pytest.fixture(scope="session")
def compiled(tmp_path_factory) -> dict[tuple[str, str], str]:
    prebuilt = os.environ.get(PREBUILT_PROGRAMS)
    if prebuilt:
        binaries = build_programs(pathlib.Path(prebuilt), build=False)
        if all(os.access(path, os.X_OK) for path in binaries.values()):
            return binaries
    return build_programs(tmp_path_factory.mktemp("programs"))


def run_native(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, timeout=120, **kwargs)


def run_in_scratch_dirs(program: str, tmp_path: pathlib.Path
                        ) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """``program DIR`` natively and under kvmdune, each given a directory of its own
    to write in: (native, dune)."""
    for name in ("native", "dune"):
        (tmp_path / name).mkdir()
    return (run_native([program, str(tmp_path / "native")]),
            run_dune([program, str(tmp_path / "dune")]))


def vmm_env(env: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment for a VMM subprocess: ``env`` (or, when None, the inherited one)
    with this test's system-call path, so an explicit environment does not drop it."""
    settings = {variable: os.environ[variable] for variable in (FAST_SYSCALLS, PATCH_SITES)
                if variable in os.environ}
    if env is None or not settings:
        return env
    return {**env, **settings}


def default_sigint() -> None:
    """A ``preexec_fn`` giving the child SIGINT's default action, as an interactive
    shell gives its foreground job: a caller that was itself started with SIGINT
    ignored (``cmd &`` in a script: CI) would pass the ignoring on, and the run would
    ignore a SIGINT as Linux does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_dune(argv, *options, env=None, timeout: float = 300,
             **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmdune", "run", *options, "--", *argv],
                          capture_output=True, timeout=timeout, env=vmm_env(env), **kwargs)


#: ``--syscall-stats``'s counts: calls served natively, calls that reached the VMM.
_SERVED_COUNTS = re.compile(rb"(\d+) served natively, .*?; (\d+) calls reached the VMM in all")


def assert_served_natively(stderr: bytes, calls: int, syscall_path: str) -> None:
    """A ``--syscall-stats`` run made ``calls`` calls of a kind the fast path serves:
    all but a few (the VMM at work on the process holds its lock) were served
    natively, unless the fast path is off."""
    if syscall_path == "slow":
        assert b"the fast path is off" in stderr
        return
    found = _SERVED_COUNTS.search(stderr)
    assert found, stderr.decode(errors="replace")[-2000:]
    native, reached_vmm = (int(n) for n in found.groups())
    assert native >= calls * 9 // 10
    assert reached_vmm < calls // 12
