"""``kvmdune wss`` and ``kvmdune bench wss`` in their short modes: the samples of a
program with known working sets are those sets; the program's own soft-dirty
bits, its output and its exit status are untouched by the sampling; forks and
execs keep working; the charts are drawn (or a clear message says why not). No
timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvmdune.bench import wss
from kvmdune.bench.programs import build

pytestmark = pytest.mark.kvm

PROGRAMS = Path(__file__).parent / "programs"
#: Pages of the program's own stack, data and code a sample may see beside a phase's.
SLACK = 48


@pytest.fixture(scope="module")
def phases_program(tmp_path_factory) -> Path:
    return build(wss.PHASES_SOURCE, tmp_path_factory.mktemp("wss"))


def run_wss(tmp_path: Path, argv: list[str], interval_ms: float = 20,
            *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "wss.json"
    result = subprocess.run([sys.executable, "-m", "kvmdune", "wss", "--interval",
                             str(interval_ms), "--json", "--output", str(report), *options,
                             "--", *argv], capture_output=True, text=True, timeout=600)
    return result, json.loads(report.read_text())


def test_samples_show_each_phase_working_set(phases_program, tmp_path):
    result, report = run_wss(tmp_path, [str(phases_program), *wss.QUICK_PHASES])
    assert result.returncode == 0 and report["status"] == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout)            # the program's own output, intact
    assert [(p["read"], p["written"]) for p in printed["phases"]] == [
        (512, 128), (2048, 1024), (256, 0)]
    samples = [(s["touched"], s["written"]) for s in report["samples"]]
    for read, written in ((512, 128), (2048, 1024), (256, 0)):
        inside = [(t, w) for t, w in samples
                  if read <= t <= read + SLACK and written <= w <= written + SLACK]
        assert inside, f"no sample saw {read} touched / {written} written: {samples}"
    assert all(s["cost_s"] > 0 for s in report["samples"])


def test_program_keeps_its_own_soft_dirty_bits_while_watched(tmp_path):
    binary = tmp_path / "softdirty_watched"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(binary),
                    str(PROGRAMS / "softdirty_watched.c")], check=True)
    result, report = run_wss(tmp_path, [str(binary)], 2)
    assert result.returncode == 0, result.stderr[-2000:]
    # Exactly the pages it wrote after its own clear_refs 4, though the sampler
    # read and cleared the dirty bits many times in between ...
    assert result.stdout == "soft-dirty: 5 40\n"
    assert len(report["samples"]) >= 10
    # ... and the sampler saw those writes too (the 64 first writes, then 2 more).
    assert sum(s["written"] for s in report["samples"]) >= 66


def test_forks_and_execs_are_watched_through(tmp_path):
    busybox = "/bin/busybox"
    if not Path(busybox).exists():
        pytest.skip("busybox-static is not installed")
    # A pipeline: the shell forks (a forked child runs on unsampled) and waits.
    script = f"{busybox} dd if=/dev/zero bs=1M count=64 2>/dev/null | {busybox} wc -c"
    result, report = run_wss(tmp_path, [busybox, "sh", "-c", script], 5)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(64 << 20)
    assert report["samples"]
    # An exec: the samples go on in the new program's address space, whose 1 MiB
    # buffer (256 pages) dd touches.
    script = f"exec {busybox} dd if=/dev/zero of=/dev/null bs=1M count=2000"
    result, report = run_wss(tmp_path, [busybox, "sh", "-c", script], 5)
    assert result.returncode == 0, result.stderr[-2000:]
    assert max(s["touched"] for s in report["samples"]) >= 256


def test_exit_status_is_the_programs(tmp_path):
    result, report = run_wss(tmp_path, ["/bin/sh", "-c", "exit 7"], 5)
    assert result.returncode == 7 and report["status"] == 7


def test_table_and_chart(phases_program, tmp_path):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "wss.svg"
    table = tmp_path / "wss.txt"
    result = subprocess.run([sys.executable, "-m", "kvmdune", "wss", "--interval", "20",
                             "--chart", str(chart), "--output", str(table), "--",
                             str(phases_program), *wss.QUICK_PHASES],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = table.read_text().splitlines()
    assert "touched" in lines[1] and "written" in lines[1]
    assert len(lines) > 4 and all(len(line.split()) == 6 for line in lines[3:])
    assert chart.read_text().lstrip().startswith("<?xml") and "<svg" in chart.read_text()


def test_chart_without_matplotlib_says_how_to_get_it(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; "
            "from kvmdune.cli.main import main; "
            f"sys.exit(main(['wss', '--chart', '{tmp_path / 'x.svg'}', '--', '/bin/true']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "pip install 'kvmdune[chart]'" in result.stderr
    assert not (tmp_path / "x.svg").exists()


def test_bench_wss_quick_compares_both_methods(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kvmdune", "bench", "wss", "--quick",
                             "--samples", "1", "--json"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    native, dune = data["native"], data["kvmdune"]
    assert native["samples"] and dune["samples"]
    assert all(sample["written"] is None for sample in native["samples"])
    assert max(sample["touched"] for sample in dune["samples"]) >= 2048
    for side in (native, dune):
        assert side["alone_s"] > 0 and side["watched_s"] > 0 and side["overhead"] > 0
    assert [phase["read"] for phase in data["phases"]] == [512, 2048, 256]


def test_native_method_reads_referenced_of_a_live_process():
    import os

    assert wss.referenced_pages(os.getpid()) >= 0
