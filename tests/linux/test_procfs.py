"""/proc as the guest sees it, without a VM: path rewriting, the directories that
stand for the guest's (fd, fdinfo, task), readlink of its descriptors, and fdinfo
in guest terms. The process here is a stand-in holding a real descriptor table
(real host descriptors) and the few attributes procfs reads."""

from __future__ import annotations

import os
import select
import shutil
import tempfile

import pytest

from kvmdune.linux import procfs
from kvmdune.linux.abi import O_CLOEXEC
from kvmdune.linux.fdtable import FdTable
from kvmdune.linux.uaccess import Fault


class GuestStandIn:
    """What procfs asks of a process (kvmdune.linux.process.Process has the same)."""

    def __init__(self) -> None:
        self.fds = FdTable.with_standard_streams()
        self.scratch_dirs: dict[str, str] = {}
        self.exe = "/bin/busybox"
        self.comm = b"cat"
        self._held: list[int] = []

    def thread_ids(self) -> list[int]:
        return [os.getpid()]

    def scratch_directory(self, guest_path: str) -> str:
        directory = tempfile.mkdtemp(prefix="kvmdune-test-proc-")
        self.scratch_dirs[directory] = guest_path
        return directory

    def transient_file(self, content: bytes, name: str = "") -> bytes:
        fd = os.memfd_create(procfs.transient_name(name), os.MFD_CLOEXEC)
        os.write(fd, content)
        self._held.append(fd)
        return f"/proc/self/fd/{fd}".encode()

    def live_file(self, live: procfs.LiveFile) -> bytes:
        self._held.append(live.fd)
        return f"/proc/self/fd/{live.fd}".encode()

    def fd_directory(self) -> bytes:
        return procfs.fd_directory(self)

    def open(self, path: str, flags: int = os.O_RDONLY, cloexec: bool = False) -> int:
        """Open as a forwarded open does: a host descriptor installed in the table."""
        return self.fds.install(os.open(path, flags | os.O_CLOEXEC), cloexec=cloexec)

    def close(self) -> None:
        self.fds.close_all()
        for fd in self._held:
            os.close(fd)
        for directory in self.scratch_dirs:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def guest():
    process = GuestStandIn()
    yield process
    process.close()


PID = os.getpid()


# -- passed through: the same for the guest as for the VMM ------------------------------

@pytest.mark.parametrize("path", [b"/proc/net/tcp", b"/proc/self/net/unix", b"/proc/self/ns/net",
                                  b"/proc/%d/ns/mnt" % PID, b"/proc/self/mounts"])
def test_system_wide_entries_pass_through(guest, path):
    assert procfs.rewrite(guest, path) == path
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert procfs.opened_vmm_entry(fd) is False
    finally:
        os.close(fd)


@pytest.mark.parametrize("entry", ["mem", "environ_raw", "map_files", "syscall"])
def test_vmm_entries_stay_refused(guest, entry):
    with pytest.raises(Fault) as refused:
        procfs.rewrite(guest, f"/proc/self/{entry}".encode())
    assert refused.value.errno == 13
    # Positive control: a generated entry of the same directory is served.
    assert procfs.rewrite(guest, b"/proc/self/comm").startswith(b"/proc/self/fd/")


@pytest.mark.parametrize("entry", ["pagemap", "clear_refs"])
@pytest.mark.parametrize("directory", ["self", str(PID), "thread-self"])
def test_page_table_entries_are_the_guests_own_live_files(guest, entry, directory):
    """pagemap and clear_refs, by any name of the guest's own directory, are answered
    by the VMM (from the guest's tables), never the VMM's own; another process's stay
    refused."""
    path = procfs.rewrite(guest, f"/proc/{directory}/{entry}".encode())
    target = os.readlink(path.decode())
    assert target.startswith(f"/memfd:{procfs.transient_name(entry)}")
    assert procfs.guest_view_of_target(target, {}) == f"/proc/{PID}/{entry}"
    with pytest.raises(Fault) as refused:
        procfs.rewrite(guest, f"/proc/1/{entry}".encode())
    assert refused.value.errno == 13


def test_vmm_fd_directory_opened_behind_the_rewrite_is_caught():
    fd = os.open(f"/proc/{PID}/fdinfo", os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert procfs.opened_vmm_entry(fd) is True
    finally:
        os.close(fd)


# -- another process's entries -----------------------------------------------------------

def test_other_process_thread_entries_checked_as_the_process(guest):
    other = os.getppid()
    assert procfs.rewrite(guest, b"/proc/%d/task/%d/comm" % (other, other)) == \
        b"/proc/%d/task/%d/comm" % (other, other)
    for refused in (b"/proc/%d/task/%d/mem" % (other, other), b"/proc/%d/task" % other,
                    b"/proc/%d/task/%d/fd/3" % (other, other), b"/proc/%d/fdinfo/3" % other):
        with pytest.raises(Fault):
            procfs.rewrite(guest, refused)


# -- task --------------------------------------------------------------------------------

def test_task_directory_holds_the_one_thread(guest):
    directory = procfs.rewrite(guest, b"/proc/self/task").decode()
    assert os.listdir(directory) == [str(PID)]
    assert os.path.isdir(os.path.join(directory, str(PID)))
    assert guest.scratch_dirs[directory] == f"/proc/{PID}/task"


@pytest.mark.parametrize("path", [b"/proc/self/task/%d/comm" % PID,
                                  b"/proc/%d/task/%d/comm" % (PID, PID),
                                  b"/proc/thread-self/comm"])
def test_thread_entries_are_the_process_entries(guest, path):
    with open(procfs.rewrite(guest, path), "rb") as f:
        assert f.read() == b"cat\n"


# -- fd and readlink ---------------------------------------------------------------------

def test_readlink_of_an_open_fd_directory_names_proc_pid_fd(guest):
    """The directory the guest opened for /proc/self/fd is a scratch directory of the
    VMM; readlink of its descriptor names what the guest opened."""
    number = guest.open(procfs.rewrite(guest, b"/proc/self/fd").decode(), os.O_DIRECTORY)
    assert procfs.readlink(guest, b"/proc/self/fd/%d" % number) == b"/proc/%d/fd" % PID
    # The listing names it the same way, and names other descriptors as they are.
    passwd = guest.open("/etc/passwd")
    listing = procfs.rewrite(guest, b"/dev/fd").decode()
    assert os.readlink(os.path.join(listing, str(number))) == f"/proc/{PID}/fd"
    assert os.readlink(os.path.join(listing, str(passwd))) == "/etc/passwd"
    assert procfs.readlink(guest, b"/proc/self/fd/%d" % passwd) == b"/etc/passwd"
    targets = [os.readlink(os.path.join(listing, entry)) for entry in os.listdir(listing)]
    assert not any(target.startswith(directory) for target in targets
                   for directory in guest.scratch_dirs)


def test_readlink_of_a_generated_entry_names_the_entry(guest):
    number = guest.open(procfs.rewrite(guest, b"/proc/self/comm").decode())
    assert procfs.readlink(guest, b"/proc/self/fd/%d" % number) == b"/proc/%d/comm" % PID


def test_guest_view_of_targets():
    scratch = {"/tmp/kvmdune-proc-1-abc": "/proc/7/fd"}
    assert procfs.guest_view_of_target("/tmp/kvmdune-proc-1-abc", scratch) == "/proc/7/fd"
    assert procfs.guest_view_of_target("/tmp/kvmdune-proc-1-abc/3", scratch) == "/proc/7/fd/3"
    assert procfs.guest_view_of_target("/tmp/kvmdune-proc-1-abcd", scratch) == \
        "/tmp/kvmdune-proc-1-abcd"
    assert procfs.guest_view_of_target("/memfd:kvmdune-proc:fdinfo/4 (deleted)", {}, 9) == \
        "/proc/9/fdinfo/4"
    assert procfs.guest_view_of_target("/memfd:mine (deleted)", {}, 9) == "/memfd:mine (deleted)"


# -- fdinfo ------------------------------------------------------------------------------

def _host_fdinfo(fd: int) -> bytes:
    with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
        return f.read()


def test_fdinfo_is_the_hosts_with_the_guests_close_on_exec(guest):
    plain = guest.open("/etc/passwd")
    marked = guest.open("/etc/passwd", cloexec=True)
    os.lseek(guest.fds.host(plain), 5, os.SEEK_SET)
    text = procfs.fdinfo(guest, str(plain))
    host = _host_fdinfo(guest.fds.host(plain))
    assert text.startswith(b"pos:\t5\n")
    flags = {line.split(b":")[0]: line for line in text.splitlines()}[b"flags"]
    host_flags = {line.split(b":")[0]: line for line in host.splitlines()}[b"flags"]
    assert int(host_flags.split()[1], 8) & O_CLOEXEC          # every host fd has it
    assert not int(flags.split()[1], 8) & O_CLOEXEC
    assert text.replace(flags, host_flags) == host           # the rest is the host's
    marked_flags = [line for line in procfs.fdinfo(guest, str(marked)).splitlines()
                    if line.startswith(b"flags")][0]
    assert int(marked_flags.split()[1], 8) & O_CLOEXEC


def test_fdinfo_of_epoll_names_watched_descriptors_by_guest_number(guest):
    poller_host = select.epoll()
    read_end, write_end = os.pipe()
    try:
        watched = guest.fds.install(os.dup(read_end))
        unseen = write_end                    # a host descriptor the guest has no number for
        poller_host.register(guest.fds.host(watched), select.EPOLLIN)
        poller_host.register(unseen, select.EPOLLOUT)
        poller = guest.fds.install(os.dup(poller_host.fileno()))
        text = procfs.fdinfo(guest, str(poller))
        host = _host_fdinfo(guest.fds.host(poller))
        host_targets = [line for line in host.splitlines() if line.startswith(b"tfd:")]
        targets = [line for line in text.splitlines() if line.startswith(b"tfd:")]
        assert len(host_targets) == 2 and len(targets) == 1
        assert targets[0].split()[1] == str(watched).encode()
        # The same columns as the kernel's line, only the number differs.
        original = [line for line in host_targets
                    if line.split()[1] == str(guest.fds.host(watched)).encode()][0]
        assert len(targets[0]) == len(original)
        assert b"%d" % guest.fds.host(watched) not in targets[0].split(b"events")[0]
    finally:
        poller_host.close()
        os.close(read_end)
        os.close(write_end)


def test_fdinfo_of_a_missing_descriptor_is_enoent(guest):
    for name in ("99", "x", "-1"):
        with pytest.raises(Fault) as missing:
            procfs.fdinfo(guest, name)
        assert missing.value.errno == 2


def test_fdinfo_directory_lists_guest_numbers(guest):
    number = guest.open("/etc/passwd")
    directory = procfs.rewrite(guest, b"/proc/self/fdinfo").decode()
    listed = sorted(int(name) for name in os.listdir(directory))
    assert listed == sorted({0, 1, 2, number} | {guest.fds.lowest_free()})
    assert all(host < 100 or host not in listed for host in
               (entry.host for entry in guest.fds.entries.values()))


def test_guest_fdinfo_rewrites_only_what_names_host_descriptors():
    text = (b"pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n"
            b"tfd:      104 events:       19 data:               2a  pos:0 ino:3 sdev:d\n"
            b"tfd:      300 events:        4 data:                0  pos:0 ino:4 sdev:d\n")
    out = procfs.guest_fdinfo(text, False, {104: 4}.get)
    assert out == (b"pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n"
                   b"tfd:        4 events:       19 data:               2a  pos:0 ino:3 sdev:d\n")
    assert procfs.guest_fdinfo(b"flags:\t00\n", True, {}.get) == b"flags:\t02000000\n"
