"""/proc/self names the guest; signals from outside reach the guest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from .conftest import default_sigint, run_dune, run_native

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True


def sh(script: str) -> subprocess.CompletedProcess:
    return run_dune(["busybox", "sh", "-c", script])


def test_proc_self_exe_cmdline_comm_status_match_native():
    script = ("readlink /proc/self/exe; cat /proc/self/cmdline | tr '\\0' ' '; echo; "
              "cat /proc/self/comm; grep ^Name /proc/self/status; "
              "tr '\\0' ' ' < /proc/self/cmdline; echo")
    native = subprocess.run(["busybox", "sh", "-c", script], capture_output=True)
    assert sh(script).stdout == native.stdout


def test_proc_self_maps_shows_the_guest_memory():
    result = sh("cat /proc/self/maps")
    text = result.stdout.decode()
    assert "busybox" in text and "[stack]" in text
    assert "python" not in text and "kvm" not in text


def test_maps_names_and_status_sizes_are_the_programs():
    # /bin/cat on a merged /usr: Linux names the mapping by the file's own path
    # (/usr/bin/cat), and ld.so's too; status's sizes count the guest's mappings
    # (they were the VMM's: a VmSize of gigabytes).
    cat = "/bin/cat"
    if os.path.realpath(cat) == cat:
        pytest.skip("/bin is not a link to /usr/bin here")
    native = run_native([cat, "/proc/self/maps"]).stdout.decode()
    dune = run_dune([cat, "/proc/self/maps"]).stdout.decode()
    assert _mapped_files(dune) == _mapped_files(native)
    status = run_dune([cat, "/proc/self/status"]).stdout.decode()
    sizes = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
             if line.startswith("Vm")}
    mapped_kb = sum((int(end, 16) - int(start, 16)) // 1024 for start, end in
                    (line.split()[0].split("-") for line in dune.splitlines()))
    assert sizes["VmSize"] < 64 * 1024 and sizes["VmPeak"] >= sizes["VmSize"]
    assert abs(sizes["VmSize"] - mapped_kb) < 1024, (sizes, mapped_kb)
    assert 0 < sizes["VmExe"] < 1024 and sizes["VmLib"] > sizes["VmExe"]


def _mapped_files(maps: str) -> set[str]:
    fields = (line.split() for line in maps.splitlines())
    return {f[5] for f in fields if len(f) > 5 and f[5].startswith("/")}


def test_proc_self_fd_lists_guest_descriptors_only():
    result = run_dune([sys.executable, "-c",
                       "import os; print(sorted(os.listdir('/proc/self/fd'), key=int))"])
    assert result.stdout.strip() == b"['0', '1', '2', '3']", result.stderr


def opens(path: str) -> str:
    """A script that says whether ``path`` opens. Only the open: reading /proc/self/mem
    at offset 0 fails natively as well (EIO), so a read would prove nothing."""
    return f"true 3< {path} && echo opened || echo refused"


@pytest.mark.parametrize("entry", ["mem", "syscall"])
def test_vmm_revealing_entries_are_refused(entry):
    native = subprocess.run(["busybox", "sh", "-c", opens(f"/proc/self/{entry}")],
                            capture_output=True)
    assert native.stdout == b"opened\n"            # the positive control: Linux opens it
    assert sh(opens(f"/proc/self/{entry}")).stdout == b"refused\n"


def test_proc_self_entries_that_reveal_nothing_open():
    assert sh(opens("/proc/self/status") + "; " + opens("/proc/self/maps")).stdout == \
        b"opened\nopened\n"


def test_proc_self_entries_passed_through_read_as_natively():
    """Entries that mean the same for the guest as for its VMM (one process to
    Linux) read as natively: the mount table, the cgroup, the OOM scores."""
    script = ("cat /proc/self/mounts /proc/self/cgroup; "
              "cat /proc/self/oom_score_adj; test -n \"$(cat /proc/self/oom_score)\" && echo scored")
    native = subprocess.run(["busybox", "sh", "-c", script], capture_output=True)
    assert native.returncode == 0 and native.stdout.endswith(b"scored\n")
    assert sh(script).stdout == native.stdout


def test_pagemap_and_smaps_are_the_guests():
    """pagemap opens and reads (the guest's own page tables: tests/acceptance/
    test_pagemap.py checks its bits); smaps shows the guest's mappings with counters."""
    assert sh(opens("/proc/self/pagemap")).stdout == b"opened\n"
    smaps = sh("cat /proc/self/smaps").stdout.decode()
    assert "busybox" in smaps and "python" not in smaps
    assert "Rss:" in smaps and "Referenced:" in smaps and "VmFlags:" in smaps


def test_proc_of_own_pid_is_the_guest_too():
    result = sh("readlink /proc/$$/exe")
    assert result.stdout.strip().endswith(b"busybox")


def _after_sigint(argv, preexec) -> subprocess.Popen:
    """``argv`` started with ``preexec``, sent SIGINT 1.5 s later, then waited for."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=preexec)
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    finally:
        process.kill()
    return process


def test_sigint_from_outside_ends_the_guest_like_a_shell_reports_it():
    process = _after_sigint([sys.executable, "-m", "kvmdune", "run", "--", "busybox",
                             "sleep", "30"], default_sigint)
    assert process.returncode == 128 + signal.SIGINT
    assert b"Traceback" not in process.stderr.read()


def test_guest_handles_sigterm_sent_from_outside():
    script = "trap 'echo caught; exit 9' TERM; echo ready; while :; do sleep 0.1; done"
    process = subprocess.Popen([sys.executable, "-m", "kvmdune", "run", "--", "busybox", "sh",
                                "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline() == b"ready\n"
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert out == b"caught\n" and process.returncode == 9


@pytest.mark.parametrize("path", [
    "/proc/self/root/proc/self/mem",
    "/proc/$$/task/$$/mem",
    "/proc/thread-self/mem",
    "link-to-mem",                 # a symlink the guest planted: checked on what opened
    "/proc/$PPID/mem",             # another process (maybe another guest's VMM)
    "/proc/$PPID/fd/0",
])
def test_ways_around_to_vmm_memory_and_descriptors_are_refused(tmp_path, path):
    script = f"cd {tmp_path} && rm -f link-to-mem && ln -s /proc/self/mem link-to-mem && " + \
        opens(path) + " 2>/dev/null"
    native = subprocess.run(["busybox", "sh", "-c", script], capture_output=True)
    assert native.stdout == b"opened\n"            # the positive control: Linux opens it
    assert sh(script).stdout == b"refused\n"


def test_dev_fd_names_guest_descriptors():
    result = run_dune(["/bin/bash", "-c", "cat <(echo substituted); echo to-stderr > /dev/stderr"])
    assert result.stdout == b"substituted\n" and result.stderr == b"to-stderr\n"


# -- dispositions inherited from the caller ------------------------------------------------
#: What a caller may leave ignored (``cmd &`` in a script ignores SIGINT and SIGQUIT;
#: nohup SIGHUP; some daemons SIGPIPE), which the program inherits ignored. Python's own
#: start-up ignores SIGPIPE and SIGXFSZ, so only the native client can pass those on.
CALLER_IGNORES = (signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGTERM)


def _ignoring(signals):
    def preexec() -> None:
        for signo in signals:
            signal.signal(signo, signal.SIG_IGN)
    return preexec


@pytest.mark.parametrize("entry", ["module", "client"])
def test_ignored_signals_are_inherited_and_status_shows_the_programs_sets(compiled, entry):
    from kvmdune import CLIENT_PATH

    program = compiled[("dispositions", "static")]
    ignores = CALLER_IGNORES + ((signal.SIGPIPE,) if entry == "client" else ())
    native = run_native([program], preexec_fn=_ignoring(ignores))
    assert native.returncode == 0
    control = "at start ignored: " + " ".join(str(int(s)) for s in sorted(ignores))
    assert native.stdout.startswith(control.encode() + b"\n")    # the positive control
    command = [sys.executable, "-m", "kvmdune"] if entry == "module" else [CLIENT_PATH]
    dune = subprocess.run([*command, "run", "--", program], capture_output=True,
                          timeout=120, preexec_fn=_ignoring(ignores))
    assert (dune.stdout, dune.returncode) == (native.stdout, native.returncode), dune.stderr


def test_sigint_to_a_run_whose_caller_ignores_it_is_ignored_as_natively():
    def outcome(argv):
        return _after_sigint(argv, _ignoring((signal.SIGINT,))).returncode

    command = ["busybox", "sleep", "3"]
    assert outcome(command) == 0
    assert outcome([sys.executable, "-m", "kvmdune", "run", "--", *command]) == 0
