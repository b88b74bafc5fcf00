"""The guest's descriptor table against a plain model of Linux's (no KVM needed):
lowest free number, dup/dup2/F_DUPFD semantics, close-on-exec, RLIMIT_NOFILE; and
the capture of the caller's descriptors at start, in a process of its own."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kvmdune.linux.abi import Errno
from kvmdune.linux.fdtable import HOST_FD_FLOOR, FdTable

LIMIT = 12
numbers = st.integers(min_value=-1, max_value=LIMIT + 2)


class LinuxModel:
    """Linux's descriptor table reduced to what the guest can observe: each number
    names an open file (an identity) and carries its close-on-exec flag."""

    def __init__(self, limit: int) -> None:
        self.fds: dict[int, tuple[int, bool]] = {}
        self.limit = limit

    def lowest_free(self, minimum: int = 0) -> int | None:
        fd = minimum
        while fd in self.fds:
            fd += 1
        return fd if fd < self.limit else None

    def open(self, identity: int, cloexec: bool) -> int:
        fd = self.lowest_free()
        if fd is None:
            return -Errno.EMFILE
        self.fds[fd] = (identity, cloexec)
        return fd

    def close(self, fd: int) -> int:
        return 0 if self.fds.pop(fd, None) is not None else -Errno.EBADF

    def dupfd(self, fd: int, minimum: int, cloexec: bool) -> int:
        if fd not in self.fds:
            return -Errno.EBADF
        if minimum >= self.limit:
            return -Errno.EINVAL
        new = self.lowest_free(minimum)
        if new is None:
            return -Errno.EMFILE
        self.fds[new] = (self.fds[fd][0], cloexec)
        return new

    def dup2(self, old: int, new: int, cloexec: bool) -> int:
        if old not in self.fds or not 0 <= new < self.limit:
            return -Errno.EBADF
        if old != new:
            self.fds[new] = (self.fds[old][0], cloexec)
        return new

    def exec(self) -> None:
        self.fds = {fd: entry for fd, entry in self.fds.items() if not entry[1]}


class FdTableMachine(RuleBasedStateMachine):
    """Every operation on the table gives Linux's answer; the host descriptors
    behind it stay in step (right file, one each, close-on-exec on the host, none
    leaked)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = FdTable(LIMIT)
        self.model = LinuxModel(LIMIT)
        self.identities: dict[int, int] = {}      # inode of each opened memfd -> identity
        self.next_identity = 0

    def _new_host_file(self) -> tuple[int, int]:
        host = os.memfd_create("fdtable-test", os.MFD_CLOEXEC)
        self.next_identity += 1
        self.identities[os.fstat(host).st_ino] = self.next_identity
        return host, self.next_identity

    @rule(cloexec=st.booleans())
    def install(self, cloexec: bool) -> None:
        host, identity = self._new_host_file()
        assert self.table.install(host, cloexec) == self.model.open(identity, cloexec)

    @rule(fd=numbers)
    def close(self, fd: int) -> None:
        assert self.table.close(fd) == self.model.close(fd)

    @rule(fd=numbers)
    def dup(self, fd: int) -> None:
        assert self.table.dup(fd) == self.model.dupfd(fd, 0, False)

    @rule(fd=numbers, minimum=st.integers(min_value=0, max_value=LIMIT + 2),
          cloexec=st.booleans())
    def fcntl_dupfd(self, fd: int, minimum: int, cloexec: bool) -> None:
        assert (self.table.dup(fd, minimum=minimum, cloexec=cloexec)
                == self.model.dupfd(fd, minimum, cloexec))

    @rule(old=numbers, new=numbers, cloexec=st.booleans())
    def dup2(self, old: int, new: int, cloexec: bool) -> None:
        assert self.table.dup2(old, new, cloexec) == self.model.dup2(old, new, cloexec)

    @precondition(lambda self: self.model.fds)
    @rule(data=st.data(), cloexec=st.booleans())
    def set_cloexec(self, data, cloexec: bool) -> None:
        fd = data.draw(st.sampled_from(sorted(self.model.fds)))
        self.table.entries[fd].cloexec = cloexec
        self.model.fds[fd] = (self.model.fds[fd][0], cloexec)

    @rule()
    def exec(self) -> None:
        self.table.close_on_exec()
        self.model.exec()

    @rule(limit=st.integers(min_value=1, max_value=LIMIT))
    def setrlimit(self, limit: int) -> None:
        # Lowering the limit keeps the descriptors above it, as Linux does.
        self.table.max_fds = self.model.limit = limit

    @invariant()
    def same_descriptors(self) -> None:
        assert sorted(self.table.entries) == sorted(self.model.fds)
        for fd, (identity, cloexec) in self.model.fds.items():
            entry = self.table.entries[fd]
            assert entry.cloexec == cloexec
            assert self.identities[os.fstat(entry.host).st_ino] == identity

    @invariant()
    def host_side(self) -> None:
        hosts = [entry.host for entry in self.table.entries.values()]
        assert len(set(hosts)) == len(hosts)          # one host descriptor per number
        for host in hosts:
            assert host > 2                           # never the VMM's stdio
            assert fcntl.fcntl(host, fcntl.F_GETFD) & fcntl.FD_CLOEXEC

    def teardown(self) -> None:
        hosts = [entry.host for entry in self.table.entries.values()]
        self.table.close_all()
        assert self.table.entries == {}
        for host in hosts:                            # closed on the host too
            try:
                os.fstat(host)
            except OSError:
                continue
            raise AssertionError(f"host descriptor {host} left open")


FdTableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                            deadline=None)
TestFdTableAgainstLinux = FdTableMachine.TestCase


def test_lowest_free_and_emfile_at_the_limit() -> None:
    table = FdTable(4)
    opened = [table.install(os.memfd_create("t", os.MFD_CLOEXEC)) for _ in range(5)]
    assert opened == [0, 1, 2, 3, -Errno.EMFILE]
    assert table.close(1) == 0
    assert table.install(os.memfd_create("t", os.MFD_CLOEXEC)) == 1   # the hole first
    assert table.dup(0, minimum=4) == -Errno.EINVAL
    assert table.dup2(0, 4) == -Errno.EBADF
    table.close_all()


CAPTURE = textwrap.dedent("""
    import json, os, resource, sys
    from kvmdune.linux.fdtable import FdTable, capture_caller_fds
    before = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 2, 3, 5)}
    caller = capture_caller_fds(detach=True)
    held = {fd: os.readlink(f"/proc/self/fd/{host}") for fd, host in caller.held.items()}
    plugged = os.readlink("/proc/self/fd/1")         # the VMM's own fd 1 now
    left = [fd for fd in (3, 5) if os.path.exists(f"/proc/self/fd/{fd}")
            and os.readlink(f"/proc/self/fd/{fd}") == before[fd]]
    first_open = os.open(os.devnull, os.O_RDONLY)    # lands at the floor at once
    table = FdTable.from_caller(caller, [0, 3, 4], caller.nofile[0])
    print(json.dumps({"before": before, "held": held, "plugged": plugged,
                      "nofile": list(caller.nofile),
                      "vmm_nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
                      "table": sorted(table.entries), "untaken": sorted(caller.held),
                      "originals_open": left, "first_open": first_open}))
""")


def test_capture_keeps_numbers_moves_hosts_and_plugs_closed_stdio(tmp_path) -> None:
    """In a process of its own: fds 3 and 5 open, 1 closed, RLIMIT_NOFILE 64 (soft):
    the VMM raises its own soft limit to the hard one, the guest keeps 64."""
    three, five = tmp_path / "three", tmp_path / "five"
    three.write_text("3")
    five.write_text("5")
    script = (f"exec 3<{three} 5<{five} 1>&-; ulimit -Sn 64; "
              f'exec {sys.executable} -c "$CAPTURE"')
    # The report goes to stderr: stdout is what the test closes.
    capture = CAPTURE.replace("print(json.dumps(", "print(file=sys.stderr, end=json.dumps(")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            env={**os.environ, "CAPTURE": capture}, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stderr)
    assert sorted(report["held"]) == ["0", "2", "3", "5"]          # 1 was closed
    assert report["held"]["3"] == str(three) and report["held"]["5"] == str(five)
    assert report["held"]["0"] == report["before"]["0"]
    assert report["plugged"] == "/dev/null"
    assert report["nofile"][0] == 64 and report["nofile"][1] > 64
    assert report["vmm_nofile"][0] == report["vmm_nofile"][1] == report["nofile"][1]
    assert report["table"] == [0, 3]                               # 4 was never open
    assert report["untaken"] == [2, 5]
    assert report["originals_open"] == []                          # detached
    # The numbers below the floor are taken (``occupy_low_numbers``): no descriptor
    # the VMM opens needs moving up, a close that would drop the guest's locks.
    assert report["first_open"] >= HOST_FD_FLOOR


def _names(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def test_own_copy_of_a_file_the_guest_has_open_stays_until_the_guest_closes_it(tmp_path):
    """A close of any descriptor of a file drops the process's POSIX locks on it, and
    the guest's locks are the VMM's: the VMM's own copy (a shared mapping's) of a
    file the guest has open is kept until the guest's last descriptor of it goes."""
    locked, other = tmp_path / "locked", tmp_path / "other"
    locked.write_text("l")
    other.write_text("o")
    table = FdTable()
    guest = table.install(os.open(locked, os.O_RDONLY))
    own, unrelated = os.open(locked, os.O_RDONLY), os.open(other, os.O_RDONLY)
    table.close_own_copy(own)
    table.close_own_copy(unrelated)
    assert _names(own) == str(locked)          # kept
    assert _names(unrelated) != str(other)     # closed at once: the guest has no copy
    assert table.close(guest) == 0
    assert _names(own) != str(locked)          # the guest's close let it go
    table.close_all()
