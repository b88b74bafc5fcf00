"""The resident start-up server of ``kvmdune run`` and ``kvmdune sandbox``: one per
user and code version, with everything a run needs imported, forking one fresh worker
per run before any VM exists (KVM binds a VM to the process that made it, and nothing
of one run -- memory, random state, descriptors -- may reach another).

The native client (``native/client.c``, installed as the ``kvmdune`` command) connects
to ``<dir>/server-<version>.sock`` (``dir`` is ``/tmp/kvmdune-<uid>``, 0700, checked
with lstat by both sides; ``version`` hashes the package's sources, so an edited or
reinstalled package never reaches a stale server) -- or, for a caller with a
controlling terminal, to ``server-<version>-session<sid>.sock``, a server of the
caller's session whose workers join the caller's process group, so that the terminal's
job control (Ctrl-C, Ctrl-Z, fg, bg, SIGTTIN) and /dev/tty work on the guest as on the
in-process VMM -- and sends, in one message:

    u32 MAGIC_REQUEST, u32 PROTOCOL_VERSION, u32 total length, u32 descriptor count,
    u32 guest number of each caller descriptor, argv (u32 count, NUL-ended strings),
    environment (the same); SCM_RIGHTS: /dev/kvm, cwd, root, the caller descriptors.

The worker answers ``Reply`` records (u32 magic, kind, value, length; then ``length``
bytes of text): a CHALLENGE naming its pid (the client proves it can open
``/proc/<pid>/mem``, which a caller under Landlock cannot), then ACCEPTED with a
pidfd of itself (signals are forwarded through it) or REFUSED with the reason (the
client then runs in-process). The server sends the worker's wait status last
(MAGIC_STATUS, status) and kills the worker's process group when the client goes away.

The worker's rights are the server's, so it checks the caller's confinement from
/proc (never from what the client says): identity, capabilities, no_new_privs,
seccomp, namespaces, LSM label, root and Landlock must be the server's; cgroups,
resource limits, nice, CPU affinity, OOM score, umask, signal mask and ignored
signals are adopted from the caller, and a caller whose value cannot be adopted is
refused.
"""

from __future__ import annotations

import array
import os
import resource
import select
import signal
import socket
import stat
import struct
import sys
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path
from typing import Callable, NoReturn

from .. import CLIENT_PATH
from . import inherited, worker_fds

#: Bumped with any change of the wire format (client.c's PROTOCOL_VERSION).
PROTOCOL_VERSION = 1
#: The installed command's native client, built by setup.py beside this module.
CLIENT = Path(CLIENT_PATH)
#: How long an idle server (no run in progress) stays.
IDLE_SECONDS = 600
#: How often an idle server checks that it is still current: its socket still its
#: own, its package's sources unchanged (a stale server leaves at once).
CHECK_SECONDS = 20
#: KVMDUNE_STARTUP=inprocess makes the client take the in-process path; with
#: KVMDUNE_STARTUP=resident, ``python -m kvmdune run|sandbox`` goes through the client
#: (the test suites run once each way).
STARTUP_VARIABLE = "KVMDUNE_STARTUP"
RESIDENT_COMMANDS = ("run", "sandbox")

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
SCM_MAX_FD = 253
HEADER = struct.Struct("<IIII")
REPLY = struct.Struct("<IIII")
STATUS = struct.Struct("<II")
U32 = struct.Struct("<I")
UCRED = struct.Struct("3i")
#: Room for the most descriptors one message carries, and the sender's credentials.
ANCILLARY_SIZE = socket.CMSG_SPACE(SCM_MAX_FD * 4) + socket.CMSG_SPACE(UCRED.size)


class Magic(IntEnum):
    REQUEST = 0x5244564B   # "KVDR"
    REPLY = 0x4144564B     # "KVDA"
    STATUS = 0x5344564B    # "KVDS"


class ReplyKind(IntEnum):
    CHALLENGE = 1
    ACCEPTED = 2
    REFUSED = 3
    NAME = 4        # after ACCEPTED: the guest's new name (value 1: with its argv)
    STOPPED = 5     # from the server: the worker stopped (the client stops too)


class Passed(IntEnum):
    """The descriptors every request carries first."""
    KVM = 0
    CWD = 1
    ROOT = 2


PASSED_FIXED = len(Passed)

#: /proc/PID/status lines that must be the server's: who it is and what it may do.
SAME_STATUS_FIELDS = ("Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "Seccomp_filters",
                      "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def code_version(root: str | os.PathLike) -> str:
    """FNV-1a over ``path\\0size\\0mtime_ns\\0`` of every .py and .so of the package,
    sorted by path (client.c's code_version computes the same)."""
    root = os.fspath(root)
    names = []
    for directory, _, files in os.walk(os.path.join(root, "kvmdune")):
        relative = os.path.relpath(directory, root)
        names += [os.path.join(relative, name) for name in files
                  if name.endswith((".py", ".so"))]
    digest = FNV_OFFSET
    for name in sorted(names, key=os.fsencode):
        st = os.stat(os.path.join(root, name))
        for field in (os.fsencode(name), b"%d" % st.st_size, b"%d" % st.st_mtime_ns):
            for byte in field + b"\0":
                digest = ((digest ^ byte) * FNV_PRIME) & 0xFFFF_FFFF_FFFF_FFFF
    return f"{digest:016x}"


def client_command() -> str | None:
    """The native client, where it is built."""
    return str(CLIENT) if os.access(CLIENT, os.X_OK) else None


def redirect_to_client(argv: list[str]) -> None:
    """``python -m kvmdune run|sandbox`` with KVMDUNE_STARTUP=resident: become the
    native client, so that the start-up path is the installed command's."""
    if (os.environ.get(STARTUP_VARIABLE) != "resident" or not argv
            or argv[0] not in RESIDENT_COMMANDS):
        return
    client = client_command()
    if client is not None:
        # Python's start-up ignored these, not the caller (as far as anyone can tell
        # here: subprocess's restore_signals assumes the same); the client passes
        # the ignored set on to the program.
        for number in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(number, signal.SIG_DFL)
        os.execv(client, ["kvmdune", *argv])


# ---- the server ----------------------------------------------------------------------

class Mode(str, Enum):
    DETACHED = "detached"   # a session of its own: for callers without a terminal
    SESSION = "session"     # in its callers' session: workers join their process group


def serve_main(argv: list[str]) -> None:
    """Entry point of ``python -I -c ...`` (client.c's exec_server): DIR VERSION
    READY_FD MODE."""
    directory, version, ready, mode = argv[0], argv[1], int(argv[2]), Mode(argv[3])
    try:
        serve(directory, version, ready, mode)
    finally:
        sys.stderr.flush()
        os._exit(0)


def private_directory(directory: str) -> bool:
    """Whether ``directory`` is a directory of this user's, mode 0700 (not followed)."""
    st = os.lstat(directory)
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and stat.S_IMODE(st.st_mode) == 0o700)


def server_name(version: str, mode: Mode) -> str:
    """The socket's and lock's name (client.c's connect_server makes the same)."""
    if mode is Mode.SESSION:
        return f"server-{version}-session{os.getsid(0)}"
    return f"server-{version}"


def serve(directory: str, version: str, ready: int, mode: Mode) -> None:
    import fcntl

    for number in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(number, signal.SIG_IGN)   # of a terminal's session: not its job
    if not private_directory(directory):
        log(f"{directory} is not a private directory of this user: not serving")
        return
    name = server_name(version, mode)
    lock = os.open(os.path.join(directory, f"{name}.lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return                  # another server of this version is starting or serving
    preload()
    root = str(Path(__file__).resolve().parents[2])
    if code_version(root) != version:
        log(f"{root} changed while the server started: not serving version {version}")
        return
    path = os.path.join(directory, f"{name}.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    staging = f"{path}.{os.getpid()}"
    listener.bind(staging)
    listener.listen(64)
    os.rename(staging, path)
    os.write(ready, b"R")
    os.close(ready)
    log(f"serving {path} from {root} (pid {os.getpid()})")
    Server(listener, path, root, version, mode).loop()


#: The command's parser, built by the server for its workers.
_parser = None


#: A dynamic program of the system's: its interpreter and libc are every dynamic
#: program's.
STANDARD_PROGRAM = "/bin/sh"


def preload() -> None:
    """Import what ``run`` and ``sandbox`` import on their way, and build the
    command's parser, so that a worker does neither."""
    global _parser
    from .sandbox import frozen_imports

    with frozen_imports():
        import pwd  # noqa: F401  dropping to another user (sandbox as root)
        import subprocess  # noqa: F401

        from . import main
        from ..linux import elf, fastpath, runner, sitepatch, trace, vdso  # noqa: F401
        from ..machine import disasm
        from ..sandbox import guard, policy  # noqa: F401

        fastpath.native_module()
        vdso.host_vdso()        # the same in a forked worker: read and checked once
        # ld.so's and libc's call sites patched once here, not in every run.
        sitepatch.prewarm(STANDARD_PROGRAM, patch=True)
        disasm._decoder()       # capstone: what a sandbox imports before it drops root
        _parser = main.build_parser()


def log(text: str) -> None:
    print(f"kvmdune server {os.getpid()}: {text}", file=sys.stderr, flush=True)


@dataclass
class Worker:
    pid: int
    pidfd: int
    connection: socket.socket | None


class Server:
    """Accepts connections, forks a worker for each, reports its end to its client,
    and kills it when the client goes away."""

    def __init__(self, listener: socket.socket, path: str, root: str, version: str,
                 mode: Mode) -> None:
        self.listener = listener
        self.mode = mode
        self.path = path
        self.root = root
        self.version = version
        self.identity = os.stat(path).st_ino
        self.poller = select.poll()
        self.poller.register(listener, select.POLLIN)
        # A worker's stop (SIGCHLD, CLD_STOPPED) wakes the loop: its client stops too,
        # so that its caller (a shell) sees the job stopped once the worker is.
        self.wakeup, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.poller.register(self.wakeup, select.POLLIN)
        self.by_pidfd: dict[int, Worker] = {}
        self.by_connection: dict[int, Worker] = {}

    def loop(self) -> None:
        import time

        idle_since = time.monotonic()
        while True:
            events = self.poller.poll(None if self.by_pidfd else CHECK_SECONDS * 1000)
            if self.by_pidfd or events:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= IDLE_SECONDS or not self.current():
                self.retire()
                return
            for fd, _ in events:
                if fd == self.wakeup:
                    self.report_stops()
                elif fd == self.listener.fileno():
                    self.accept()
                elif fd in self.by_pidfd:
                    self.reap(self.by_pidfd.pop(fd))
                elif fd in self.by_connection:
                    self.client_gone(self.by_connection.pop(fd))

    def accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            _die_with(server)
            run_worker(connection, self.mode)
        if self.mode is Mode.DETACHED:
            try:
                os.setpgid(pid, pid)    # the worker does too: whichever runs first
            except OSError:
                pass
        worker = Worker(pid, os.pidfd_open(pid), connection)
        self.by_pidfd[worker.pidfd] = worker
        self.by_connection[connection.fileno()] = worker
        self.poller.register(worker.pidfd, select.POLLIN)
        # Only the client's end: the request itself is the worker's to read.
        self.poller.register(connection, select.POLLRDHUP)

    def report_stops(self) -> None:
        try:
            os.read(self.wakeup, 4096)
        except BlockingIOError:
            pass
        for worker in list(self.by_pidfd.values()):
            try:
                stopped = os.waitid(os.P_PIDFD, worker.pidfd, os.WSTOPPED | os.WNOHANG)
            except ChildProcessError:
                continue
            if stopped is not None and worker.connection is not None:
                message = REPLY.pack(Magic.REPLY, ReplyKind.STOPPED, stopped.si_status, 0)
                try:
                    worker.connection.send(message, socket.MSG_DONTWAIT)
                except OSError:
                    pass

    def reap(self, worker: Worker) -> None:
        self.poller.unregister(worker.pidfd)
        _, status = os.waitpid(worker.pid, 0)
        os.close(worker.pidfd)
        if worker.connection is None:
            return
        self.by_connection.pop(worker.connection.fileno(), None)
        self.poller.unregister(worker.connection)
        try:
            worker.connection.sendall(STATUS.pack(Magic.STATUS, status & 0xFFFF_FFFF))
        except OSError:
            pass
        worker.connection.close()
        worker.connection = None

    def client_gone(self, worker: Worker) -> None:
        """The run ends with its client (killed, or its caller gone): the worker's
        process group, or in a terminal's session (the group is the caller's job)
        the worker. Not when the worker is ending anyway: a client also goes as soon
        as the worker has sent it the status, before the worker's teardown is over
        (send_status_early), and the guest's background processes, in the worker's
        group, must outlive the run as they would outlive an in-process VMM."""
        self.poller.unregister(worker.connection)
        worker.connection.close()
        worker.connection = None
        if _ends_within(worker.pidfd, TEARDOWN_GRACE_SECONDS):
            self.by_pidfd.pop(worker.pidfd, None)
            self.reap(worker)
            return
        try:
            if self.mode is Mode.DETACHED:
                os.killpg(worker.pid, signal.SIGKILL)
            else:
                signal.pidfd_send_signal(worker.pidfd, signal.SIGKILL)
        except OSError:
            pass

    def current(self) -> bool:
        """Whether clients still find this server: its socket is its own, its
        package is the version it serves, its session (if of one) is alive."""
        try:
            if self.mode is Mode.SESSION:
                os.kill(os.getsid(0), 0)    # the session's leader (its shell) is there
            return (os.stat(self.path).st_ino == self.identity
                    and code_version(self.root) == self.version)
        except OSError:
            return False

    def retire(self) -> None:
        try:
            if os.stat(self.path).st_ino == self.identity:
                os.unlink(self.path)
        except OSError:
            pass
        log("idle: exiting")


# ---- the worker ----------------------------------------------------------------------

class Prctl(IntEnum):
    """The prctl(2) options a worker uses (linux/prctl.h)."""
    PR_SET_PDEATHSIG = 1            # the signal it gets when its parent dies
    PR_SET_PTRACER = 0x59616D61     # Yama: who may ptrace it (0: nobody more)


def _prctl(option: Prctl, value: int) -> None:
    import ctypes

    ctypes.CDLL(None).prctl(option, value, 0, 0, 0)


def _die_with(server: int) -> None:
    """A worker ends with its server: its client, who sees the server's end as a
    failed run, must not leave a run behind that nobody waits for."""
    _prctl(Prctl.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server:
        os._exit(125)           # the server died before the signal was armed


class Refused(Exception):
    """The caller cannot have a worker: the client runs in-process instead."""


@dataclass
class Request:
    fds: list[int]              # received: Passed.*, then the caller's
    numbers: list[int]          # the caller's descriptor numbers, in order
    argv: list[str]
    environment: list[bytes]
    pid: int                    # the sender, as the kernel reports it


def run_worker(connection: socket.socket, mode: Mode) -> NoReturn:
    """A forked worker: take the run over, or refuse it; never returns."""
    status = 125
    try:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP,
                       signal.SIGCHLD):
            signal.signal(number, signal.SIG_DFL)   # adopt_signals sets the caller's
        if mode is Mode.DETACHED:
            os.setpgid(0, 0)
        close_all_but(connection.fileno())
        status, reply_fd = serve_one(connection, mode)
        if reply_fd is not None:
            send_status_early(reply_fd, status)
    except BaseException as exc:   # the server's loop must never run here
        try:
            print(f"kvmdune: resident worker: {exc!r}", file=sys.stderr, flush=True)
        finally:
            os._exit(status)
    os._exit(status)


#: How long a worker whose client went away may take to end by itself (its
#: teardown after an early status takes ~2-3 ms) before its group is killed. The
#: server's loop waits that long only when a client goes away mid-run.
TEARDOWN_GRACE_SECONDS = 0.25


def _ends_within(pidfd: int, seconds: float) -> bool:
    """Whether the process of ``pidfd`` ends (or has ended) within ``seconds``."""
    ended = select.poll()
    ended.register(pidfd, select.POLLIN)
    return bool(ended.poll(seconds * 1000))


def exited_status(code: int) -> int:
    """The wait status of a process that exited with ``code`` (W_EXITCODE)."""
    return (code & 0xFF) << 8


def send_status_early(reply_fd: int, status: int) -> None:
    """The run is over: close every descriptor the guest could have left open (its
    pipes, sockets, files and their locks, as Linux's exit does before a wait
    returns), then send the client the status the server would send after reaping
    the worker, without waiting for this process's teardown (its memory and VM:
    ~2-3 ms the caller never sees). The server's own status after the reap then
    reaches a client already gone, or one that ended on this one."""
    close_all_but(reply_fd)
    sock = socket.socket(fileno=reply_fd)
    try:
        sock.sendall(STATUS.pack(Magic.STATUS, exited_status(status)))
    except OSError:
        pass
    finally:
        sock.detach()


def close_all_but(keep: int) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def serve_one(connection: socket.socket, mode: Mode) -> tuple[int, int | None]:
    """The worker's exit status, and the connection's descriptor when the run went
    through (the status may then be sent early)."""
    try:
        request = receive_request(connection)
        check_confinement(request, connection)
        if mode is Mode.SESSION:
            join_process_group(request.pid)
        connection = adopt_caller(request, connection)
    except Refused as refused:
        send_reply(connection, ReplyKind.REFUSED, 0, str(refused))
        return 0, None
    pidfd = os.pidfd_open(os.getpid())
    send_reply(connection, ReplyKind.ACCEPTED, 0, "", fds=[pidfd])
    os.close(pidfd)
    for fd in (request.fds[Passed.CWD], request.fds[Passed.ROOT]):
        os.close(fd)
    return run_in_worker(request.argv, request.fds[Passed.KVM], connection)


class NameMirror:
    """Shows the guest's names (comm, command line) on the client process too, as the
    in-process VMM is the process its caller started (``ps -C``, ``pgrep``)."""

    def __init__(self, connection: socket.socket) -> None:
        self.fd = connection.detach()
        self.worker = os.getpid()

    def moved(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, comm: bytes, argv: list[bytes] | None) -> None:
        if os.getpid() != self.worker:
            return                  # a forked child of the guest: not the client's
        body = comm + b"\0" + (b"\0".join(argv) if argv is not None else b"")
        message = REPLY.pack(Magic.REPLY, ReplyKind.NAME, argv is not None, len(body)) + body
        sock = socket.socket(fileno=self.fd)
        try:
            sock.send(message, socket.MSG_DONTWAIT)
        except OSError:
            pass                    # a client too slow to read: its name lags
        finally:
            sock.detach()


def run_in_worker(argv: list[str], kvm: int,
                  connection: socket.socket) -> tuple[int, int | None]:
    """Run the command; its exit status, and where the connection's descriptor is
    now (the guest's descriptors may have moved it)."""
    from ..kvm.system import adopt_device
    from ..linux import task_name
    from .main import main

    adopt_device(kvm)
    mirror = NameMirror(connection)
    task_name.observe(mirror)
    worker_fds.register({kvm: adopt_device, mirror.fd: mirror.moved})
    sys.argv = ["kvmdune", *argv]
    try:
        status = main(argv, parser=_parser)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (exit_.code is not None)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return status & 0xFF, mirror.fd


def receive_request(connection: socket.socket) -> Request:
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    data, control, flags, _ = connection.recvmsg(1 << 16, ANCILLARY_SIZE,
                                                 socket.MSG_CMSG_CLOEXEC)
    fds, pid = [], None
    for level, kind, payload in control:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += array.array("i", payload[:len(payload) - len(payload) % 4])
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _, _ = UCRED.unpack(payload[:UCRED.size])
    if flags & socket.MSG_CTRUNC:
        raise Refused("descriptors were truncated")
    if len(data) < HEADER.size:
        raise Refused("a short request")
    magic, protocol, total, count = HEADER.unpack_from(data)
    if magic != Magic.REQUEST or protocol != PROTOCOL_VERSION:
        raise Refused(f"the server speaks protocol {PROTOCOL_VERSION}")
    while len(data) < total:
        more = connection.recv(total - len(data))
        if not more:
            raise Refused("a short request")
        data += more
    if count != len(fds) or count < PASSED_FIXED:
        raise Refused("descriptors missing")
    peer_pid, _, _ = UCRED.unpack(connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
    if pid is None or pid != peer_pid:
        raise Refused("the request's sender is not the process that connected")
    offset = HEADER.size
    numbers = list(struct.unpack_from(f"<{count - PASSED_FIXED}I", data, offset))
    offset += 4 * len(numbers)
    argv, offset = _strings(data, offset)
    environment, _ = _strings(data, offset)
    return Request(fds, numbers, [os.fsdecode(arg) for arg in argv], environment, pid)


def _strings(data: bytes, offset: int) -> tuple[list[bytes], int]:
    (count,) = U32.unpack_from(data, offset)
    offset += U32.size
    strings = []
    for _ in range(count):
        end = data.index(b"\0", offset)
        strings.append(data[offset:end])
        offset = end + 1
    return strings, offset


def send_reply(connection: socket.socket, kind: ReplyKind, value: int, text: str,
               fds: list[int] = ()) -> None:
    body = text.encode()
    message = REPLY.pack(Magic.REPLY, kind, value, len(body)) + body
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    connection.sendmsg([message], ancillary)


# ---- confinement ----------------------------------------------------------------------

def proc_status(pid: int | str) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def _read_or_error(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError as exc:
        return f"<{exc.strerror}>"


def namespaces(pid: int | str) -> dict[str, str]:
    return {name: os.readlink(f"/proc/{pid}/ns/{name}") for name in os.listdir("/proc/self/ns")}


def check_confinement(request: Request, connection: socket.socket) -> None:
    """Refuse a caller the worker cannot take over: one with less rights, or other
    ones, than the server's (the worker would lend it the server's)."""
    pid = request.pid
    try:
        alive = os.pidfd_open(pid)
    except OSError:
        raise Refused("the caller is gone") from None
    try:
        mine, theirs = proc_status("self"), proc_status(pid)
        for field in SAME_STATUS_FIELDS:
            if mine.get(field) != theirs.get(field):
                raise Refused(f"the caller's {field} ({theirs.get(field)}) is not the "
                              f"server's ({mine.get(field)})")
        if theirs.get("Seccomp") != "0":
            raise Refused("the caller runs under seccomp")
        if namespaces("self") != namespaces(pid):
            differ = sorted(k for k, v in namespaces(pid).items() if namespaces("self")[k] != v)
            raise Refused(f"the caller's namespaces differ ({', '.join(differ)})")
        for attribute in ("current", "exec"):
            if (_read_or_error(f"/proc/self/attr/{attribute}")
                    != _read_or_error(f"/proc/{pid}/attr/{attribute}")):
                raise Refused(f"the caller's LSM label ({attribute}) differs")
        root, own = os.fstat(request.fds[Passed.ROOT]), os.stat("/")
        if (root.st_dev, root.st_ino) != (own.st_dev, own.st_ino):
            raise Refused("the caller's root directory differs (chroot)")
        challenge_landlock(connection, pid)
        # The pid named the caller all along: it is still alive, so never reused.
        signal.pidfd_send_signal(alive, 0)
    except ProcessLookupError:
        raise Refused("the caller is gone") from None
    finally:
        os.close(alive)


def challenge_landlock(connection: socket.socket, caller: int) -> None:
    """A caller under Landlock cannot reach a process outside its domain through
    /proc (ptrace's attach mode), and there is no other way to ask whether a process
    is landlocked. So the caller opens this worker's ``/proc/PID/mem`` (a new
    process's, never opened before the caller was confined) and sends the
    descriptor. Yama's restricted ptrace is told the caller may."""
    own = f"/proc/{os.getpid()}/mem"
    _allow_ptrace_by(caller)
    try:
        send_reply(connection, ReplyKind.CHALLENGE, os.getpid(), "")
        data, control, _, _ = connection.recvmsg(U32.size, ANCILLARY_SIZE,
                                                 socket.MSG_CMSG_CLOEXEC)
    finally:
        _allow_ptrace_by(0)
    proofs = [fd for level, kind, payload in control
              if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
              for fd in array.array("i", payload[:len(payload) - len(payload) % 4])]
    try:
        if len(proofs) != 1 or data != U32.pack(Magic.REPLY):
            raise Refused(f"the caller cannot open {own} (Landlock, or another LSM)")
        given, expected = os.fstat(proofs[0]), os.stat(own)
        if (given.st_dev, given.st_ino) != (expected.st_dev, expected.st_ino):
            raise Refused(f"the caller's proof is not {own}")
    finally:
        for fd in proofs:
            os.close(fd)


def _allow_ptrace_by(pid: int) -> None:
    _prctl(Prctl.PR_SET_PTRACER, pid)       # EINVAL without Yama: nothing to allow


# ---- adoption -------------------------------------------------------------------------

def join_process_group(pid: int) -> None:
    """In a terminal's session: become part of the caller's job (its process group),
    so that the terminal's signals and job control reach the worker as the caller."""
    try:
        if os.getsid(pid) != os.getsid(0):
            raise Refused("the caller is of another session than the server")
        os.setpgid(0, os.getpgid(pid))
    except OSError as exc:
        raise Refused(f"cannot join the caller's process group ({exc.strerror})") from None


def adopt_caller(request: Request, connection: socket.socket) -> socket.socket:
    """Become the caller's process: its cgroups, limits, scheduling, umask, signal
    state, working directory, environment and descriptors (under their numbers); the
    connection, moved above them."""
    pid = request.pid
    status = proc_status(pid)
    join_cgroups(pid)
    adopt_scheduling(pid)
    os.umask(int(status["Umask"], 8))
    adopt_signals(int(status["SigIgn"], 16), int(status["SigBlk"], 16))
    os.fchdir(request.fds[Passed.CWD])
    os.environb.clear()
    for entry in request.environment:
        name, _, value = entry.partition(b"=")
        if name:
            os.environb[name] = value
    connection = place_descriptors(request, connection)
    adopt_limits(pid)
    return connection


def join_cgroups(pid: int) -> None:
    """Move into the caller's cgroup of every hierarchy (rusage, memory.max,
    pids.max and the rest hold as they do for the caller)."""
    mine = _cgroups("self")
    theirs = _cgroups(pid)
    if mine == theirs:
        return
    mounts = _cgroup_mounts()
    for hierarchy, path in theirs.items():
        if mine.get(hierarchy) == path:
            continue
        mount = mounts.get(hierarchy)
        if mount is None:
            raise Refused(f"the caller's cgroup hierarchy {hierarchy or 'v2'} is not mounted here")
        mount_point, mount_root = mount
        if not (path + "/").startswith(mount_root.rstrip("/") + "/"):
            raise Refused(f"the caller's cgroup {path} is outside the mount")
        target = os.path.join(mount_point, path[len(mount_root.rstrip("/")):].lstrip("/"))
        try:
            with open(os.path.join(target, "cgroup.procs"), "w") as procs:
                procs.write("0")
        except OSError as exc:
            raise Refused(f"cannot join the caller's cgroup {path} ({exc.strerror})") from None
    if _cgroups("self") != theirs:
        raise Refused("cannot join the caller's cgroups")


def _cgroups(pid: int | str) -> dict[str, str]:
    """Hierarchy (its controllers, "" for v2) -> cgroup path."""
    with open(f"/proc/{pid}/cgroup") as f:
        return {controllers: path for _, controllers, path in
                (line.rstrip("\n").split(":", 2) for line in f)}


def _cgroup_mounts() -> dict[str, tuple[str, str]]:
    """Hierarchy -> (mount point, root within the hierarchy), from mountinfo."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, rest = line.partition(" - ")
            fields, rest = fields.split(), rest.split()
            if len(rest) < 3:
                continue
            if rest[0] == "cgroup2":
                mounts.setdefault("", (fields[4], fields[3]))
            elif rest[0] == "cgroup":
                options = set(rest[2].split(","))
                for hierarchy in _v1_hierarchies():
                    if set(hierarchy.split(",")) <= options:
                        mounts.setdefault(hierarchy, (fields[4], fields[3]))
    return mounts


def _v1_hierarchies() -> list[str]:
    return [h for h in _cgroups("self") if h]


def adopt_scheduling(pid: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, pid))
        os.sched_setaffinity(0, os.sched_getaffinity(pid))
        with open(f"/proc/{pid}/oom_score_adj") as f:
            oom = f.read().strip()
        with open("/proc/self/oom_score_adj") as f:
            own = f.read().strip()
        if oom != own:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(oom)
    except OSError as exc:
        raise Refused(f"cannot adopt the caller's scheduling ({exc.strerror})") from None


def adopt_signals(ignored: int, blocked: int) -> None:
    """The caller's ignored signals and mask, then what Python's start-up sets (as
    the in-process path's interpreter would)."""
    inherited.record(ignored)
    for number in range(1, signal.NSIG):
        if number in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(number, signal.SIG_IGN if ignored >> (number - 1) & 1
                          else signal.SIG_DFL)
        except (OSError, ValueError):
            pass        # signals Python does not let one set (the real-time ones it uses)
    if not ignored >> (signal.SIGINT - 1) & 1:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK,
                           {n for n in range(1, signal.NSIG) if blocked >> (n - 1) & 1})


def adopt_limits(pid: int) -> None:
    for name in dir(resource):
        if not name.startswith("RLIMIT_"):
            continue
        which = getattr(resource, name)
        wanted = resource.prlimit(pid, which)
        if resource.getrlimit(which) != wanted:
            try:
                resource.setrlimit(which, wanted)
            except (OSError, ValueError):
                raise Refused(f"cannot adopt the caller's {name} {wanted}") from None


def place_descriptors(request: Request, connection: socket.socket) -> socket.socket:
    """The caller's descriptors under their own numbers; the rest (the connection,
    /dev/kvm, cwd, root) above them all, close-on-exec."""
    callers = request.fds[PASSED_FIXED:]
    base = max([*request.numbers, *request.fds, connection.fileno(), 2]) + 1
    moved_connection = _fcntl_dupfd_cloexec(connection.fileno(), base)
    os.close(connection.detach())   # its number may be a caller's
    connection = socket.socket(fileno=moved_connection)
    moved = []
    for fd in request.fds:
        moved.append(_fcntl_dupfd_cloexec(fd, base))
        os.close(fd)
    for fd in range(3):
        if fd not in request.numbers:
            try:
                os.close(fd)    # closed for the caller: the same in the worker
            except OSError:
                pass
    for high, number in zip(moved[PASSED_FIXED:], request.numbers):
        os.dup2(high, number, inheritable=True)
        os.close(high)
    request.fds = moved[:PASSED_FIXED] + request.numbers
    assert len(callers) == len(request.numbers)
    return connection


def _fcntl_dupfd_cloexec(fd: int, lowest: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
