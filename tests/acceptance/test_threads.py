"""Threads in Dune mode (issue 10): programs that start threads, each run natively
and under ``kvmdune run`` (the pthread stress program under ``kvmdune sandbox``
too) and compared byte for byte where their output is deterministic.

The stress program (programs/threads.c) covers the guest-visible behaviour:
mutex-protected counters over 8 threads, a condition-variable producer/consumer,
barriers, __thread values, signals aimed at one thread and at the process,
per-thread alternate stacks, /proc/self/task, fork from a threaded process (from
its main thread and from another one), and exit while other threads run (busy,
blocked in read, blocked in a condition wait). The rest are real programs nobody
here wrote: Python's threading, ThreadPoolExecutor, multiprocessing and http.server,
git, node, java and rustc.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from .conftest import default_sigint, run_dune, run_native, vmm_env

pytestmark = pytest.mark.kvm
#: Also run with patched call sites (conftest.py).
PATCHED_PATH = True
PYTHON = "/usr/bin/python3"     # a real binary (a pyenv shim is a shell script)


def assert_same(native, dune):
    detail = dune.stderr.decode(errors="replace")[-3000:]
    assert dune.stdout == native.stdout, detail
    assert dune.returncode == native.returncode, detail


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed here")
    return path


# -- the pthread stress program -----------------------------------------------------------

@pytest.mark.parametrize("link", ["static", "static-pie", "dynamic"])
def test_pthread_stress_program(compiled, link):
    program = compiled[("threads", link)]
    native = run_native([program])
    assert native.returncode == 3 and b"FAILED" not in native.stdout, native.stdout
    assert_same(native, run_dune([program]))


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_futexes(compiled, link):
    program = compiled[("futexes", link)]
    native = run_native([program])
    assert native.returncode == 0, native.stdout
    assert_same(native, run_dune([program]))


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_queued_signals_and_their_siginfo(compiled, link):
    """sigqueue/pthread_sigqueue reach the right thread with si_value; handlers see
    who sent a signal (a pthread_sigqueue to another thread used to stay pending on
    the VMM's host thread forever)."""
    program = compiled[("sigqueue", link)]
    native = run_native([program])
    assert native.returncode == 0 and b"taken by that thread: 1" in native.stdout, native.stdout
    assert_same(native, run_dune([program]))


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_signals_to_several_threads_keep_their_own_siginfo(compiled, link):
    """tgkill of one signal to four sleeping threads: each handler sees SI_TKILL
    from its own process; and glibc's setuid, which depends on that, returns."""
    program = compiled[("thread_siginfo", link)]
    native = run_native([program])
    assert native.returncode == 0 and b"setuid: 0" in native.stdout, native.stdout
    assert_same(native, run_dune([program], timeout=60))


def test_main_thread_exits_first(compiled):
    program = compiled[("leader_exit", "dynamic")]
    native = run_native([program])
    assert native.returncode == 4, native.stdout
    assert_same(native, run_dune([program]))


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_execve_from_another_thread(compiled, link):
    program = compiled[("exec_thread", link)]
    native = run_native([program])
    assert native.returncode == 5, native.stdout
    assert_same(native, run_dune([program]))


def test_pthread_stress_program_traced_with_thread_ids(compiled, tmp_path):
    # --trace names each line's thread as strace -f does: the first thread's lines
    # bare, every other's with [pid TID], TID one that a clone returned.
    program = compiled[("threads", "static")]
    trace = tmp_path / "trace.txt"
    assert_same(run_native([program]), run_dune([program], f"--trace={trace}"))
    text = trace.read_text()
    created = set(re.findall(r"^(?:\[pid \d+\] )?clone3?\(.*\) = (\d+)", text, re.M))
    prefixed = set(re.findall(r"^\[pid (\d+)\] ", text, re.M))
    assert len(created) >= 20, text[:2000]
    # Threads (and the children of the forks) speak with their own ids.
    assert prefixed and prefixed <= created, (sorted(prefixed - created), text[:2000])
    assert re.search(r"^\[pid \d+\] exit\(0\)", text, re.M), text[-2000:]


def _sandbox(argv, *options):
    return subprocess.run([sys.executable, "-m", "kvmdune", "sandbox", "--quiet", *options,
                           "--", *argv], capture_output=True, timeout=300, env=vmm_env())


@pytest.fixture
def open_tmp():
    """A directory the sandbox's user (nobody) can reach: pytest's is root's only."""
    path = tempfile.mkdtemp(prefix="kvmdune-threads-test-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_pthread_stress_program_in_the_sandbox(compiled, open_tmp):
    # The strict profile denies listing /proc/self/task (as it denies any /proc
    # directory listing): those three lines read 0 there; everything else is the
    # same. With the open profile the whole output is.
    program = shutil.copy(compiled[("threads", "static")], os.path.join(open_tmp, "threads"))
    native = run_native([program])
    assert_same(native, _sandbox([program], "--profile", "open"))
    strict = _sandbox([program])
    expected = re.sub(rb"(threads in /proc/self/task: |child: threads )\d+", rb"\g<1>0",
                      native.stdout)
    assert strict.stdout == expected, strict.stderr.decode(errors="replace")[-3000:]
    assert strict.returncode == native.returncode


# -- Python ---------------------------------------------------------------------------

PYTHON_THREADS = r"""
import concurrent.futures, queue, threading
out, lock = [], threading.Lock()
def work(n):
    total = sum(i * i for i in range(n))
    with lock:
        out.append(total)
    return total
threads = [threading.Thread(target=work, args=(20000 + i,)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(sorted(out))
with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    print(list(pool.map(work, range(100, 120))))
items = queue.Queue()
def produce():
    for i in range(100): items.put(i)
    items.put(None)
producer = threading.Thread(target=produce); producer.start()
total = 0
while (item := items.get()) is not None: total += item
producer.join()
print("queue total", total)
import subprocess
spawned = []
runner = threading.Thread(target=lambda: spawned.append(
    subprocess.run(["echo", "spawned from a thread"], capture_output=True).stdout))
runner.start(); runner.join()
print(spawned)
fired = threading.Event()
threading.Timer(0.05, fired.set).start()
print("timer fired", fired.wait(10))
print("threads left", threading.active_count())
"""

PYTHON_MULTIPROCESSING = r"""
import multiprocessing as mp
def square(x): return x * x
def feed(q):
    for i in range(5): q.put(i * 10)
    q.put(None)
if __name__ == "__main__":
    with mp.Pool(3) as pool:
        print(pool.map(square, range(10)))
        print(sorted(pool.imap_unordered(square, range(5))))
    q = mp.Queue()
    p = mp.Process(target=feed, args=(q,))
    p.start()
    items = []
    while (item := q.get()) is not None: items.append(item)
    p.join()
    print(items, p.exitcode)
"""


@pytest.mark.parametrize("script", [PYTHON_THREADS, PYTHON_MULTIPROCESSING],
                         ids=["threading", "multiprocessing"])
def test_python(tmp_path, script):
    path = tmp_path / "script.py"
    path.write_text(script)
    assert_same(run_native([PYTHON, str(path)]), run_dune([PYTHON, str(path)]))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stderr.read().decode(errors="replace")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail("the server never listened")


def test_python_http_server_answers_curl(tmp_path):
    # ThreadingHTTPServer serves each request on a thread of its own: several curls
    # at once, each must get the file.
    curl = need("curl")
    (tmp_path / "index.txt").write_text("hello from a thread\n")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kvmdune", "run", "--", PYTHON, "-m", "http.server",
         str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=vmm_env(),
        preexec_fn=default_sigint)
    try:
        _wait_for_port(port, server)
        fetches = [subprocess.Popen([curl, "-s", f"http://127.0.0.1:{port}/index.txt"],
                                    stdout=subprocess.PIPE) for _ in range(6)]
        bodies = [fetch.communicate(timeout=60)[0] for fetch in fetches]
        assert bodies == [b"hello from a thread\n"] * 6
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        finally:
            server.kill()
            server.stderr.close()
    assert server.returncode is not None


# -- git, node, java, rustc --------------------------------------------------------------

def _repository(path) -> None:
    git = need("git")
    env = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b",
           "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@b",
           "GIT_AUTHOR_DATE": "2001-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2001-01-01T00:00:00Z"}
    subprocess.run([git, "init", "-q", "-b", "main", str(path)], check=True)
    for i in range(5):
        (path / f"file{i}").write_text(f"content {i}\n" * 100)
        subprocess.run([git, "-C", str(path), "add", "."], check=True)
        subprocess.run([git, "-C", str(path), "commit", "-qm", f"commit {i}"], check=True,
                       env=env)


def test_git_gc_and_clone(tmp_path):
    # git gc packs with threads (pack-objects); clone --no-local runs upload-pack
    # and index-pack, which resolve deltas on threads.
    native_repo, dune_repo = tmp_path / "native", tmp_path / "dune"
    _repository(native_repo)
    shutil.copytree(native_repo, dune_repo)
    gc = ["git", "-C", "{}", "gc", "-q"]
    assert_same(run_native([a.format(native_repo) for a in gc]),
                run_dune([a.format(dune_repo) for a in gc]))
    count = ["git", "-C", "{}", "count-objects", "-v"]
    assert (run_native([a.format(dune_repo) for a in count]).stdout
            == run_native([a.format(native_repo) for a in count]).stdout)
    clone = ["git", "clone", "-q", "--no-local", "{}", "{}-clone"]
    assert_same(run_native([a.format(native_repo) for a in clone]),
                run_dune([a.format(dune_repo) for a in clone]))
    log = ["git", "-C", "{}-clone", "log", "--format=%H %s"]
    native_log = run_native([a.format(native_repo) for a in log]).stdout
    assert native_log.count(b"\n") == 5
    assert run_native([a.format(dune_repo) for a in log]).stdout == native_log


@pytest.mark.parametrize("argv", [
    ["node", "-e", "console.log(2)"],
    ["node", "-e", "const {Worker} = require('worker_threads');"
                   "new Worker('require(\"worker_threads\").parentPort.postMessage(21)',"
                   " {eval: true}).on('message', m => console.log(m * 2))"],
    ["java", "-version"],
    ["rustc", "--version"],
], ids=["node", "node-worker", "java", "rustc"])
def test_threaded_runtimes(argv):
    need(argv[0])
    native, dune = run_native(argv), run_dune(argv)
    assert_same(native, dune)
    if argv[0] == "java":        # java -version speaks on stderr
        assert dune.stderr.endswith(native.stderr), dune.stderr.decode(errors="replace")
