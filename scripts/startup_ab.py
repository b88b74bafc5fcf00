#!/usr/bin/env python3
"""Start-up and teardown of `python3 -m kvmdune run -- true` in two source trees (say
the base commit and a branch), runs interleaved so both see the same machine load,
native `true` beside them. Wall time and the CPU time (user+sys) each run used: on a
loaded machine the CPU time is the steadier figure.

    git archive BASE | tar -x -C /tmp/before && (cd /tmp/before && python3 setup.py build_ext --inplace -q)
    python3 scripts/startup_ab.py /tmp/before . 30
"""
import os, statistics, subprocess, sys, time
before, after = sys.argv[1], sys.argv[2]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 10
def once(cmd, cwd=None):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime
runs = {"native": [], "before": [], "after": []}
cmd = [sys.executable, "-m", "kvmdune", "run", "--", "true"]
for _ in range(N):
    runs["native"].append(once(["/bin/true"]))
    runs["before"].append(once(cmd, before))
    runs["after"].append(once(cmd, after))
for name, values in runs.items():
    wall = [w for w, _ in values]; cpu = [c for _, c in values]
    print(f"{name:7s} wall median {statistics.median(wall)*1e3:7.1f} ms (min {min(wall)*1e3:6.1f})"
          f"   cpu median {statistics.median(cpu)*1e3:7.1f} ms (min {min(cpu)*1e3:6.1f})   N={N}")
