"""The task name Linux gives a process, and the VMM process named after its guest."""

from __future__ import annotations

import os
import subprocess
import sys

from kvmdune.linux.task_name import comm_for_exec, comm_from_user


def test_comm_is_the_last_component_of_the_path_given():
    assert comm_for_exec("/usr/bin/python3") == b"python3"      # not python3.11
    assert comm_for_exec(b"./x") == b"x"
    assert comm_for_exec("sleep") == b"sleep"
    assert comm_for_exec("/tmp/a-name-longer-than-fifteen") == b"a-name-longer-t"


def test_comm_from_a_prctl_buffer():
    assert comm_from_user(b"worker\0garbage!!") == b"worker"
    assert comm_from_user(b"x" * 16) == b"x" * 15


def test_show_on_host_names_this_process():
    """In a child Python: its comm and its command line become the guest's, as
    /proc shows them to ps and pgrep."""
    script = ("import os; from kvmdune.linux.task_name import show_on_host; "
              "show_on_host(b'guest-name', [b'/bin/guest', b'--flag', b'x y']); "
              "print(open('/proc/self/comm').read(), end=''); "
              "print(open('/proc/self/cmdline', 'rb').read().rstrip(b'\\0').decode()); "
              "show_on_host(b'renamed'); print(open('/proc/self/comm').read(), end='')")
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert shown.stdout == "guest-name\n/bin/guest --flag x y\nrenamed\n", shown.stderr
