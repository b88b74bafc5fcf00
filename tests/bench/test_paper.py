"""``kvmdune bench paper`` and its programs in their short modes: every operation of
both tables measured on each side, each program's own check of what it did (a
protected page really faulted, the dirty pages found are those written, the second
mapping shows the first's writes, each interposed call got the right answer), the
chart written. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvmdune.bench import paper
from kvmdune.bench.programs import build, run

pytestmark = pytest.mark.kvm

APPEL_LI_BENCHES = {"trap", "prot1", "protN", "unprot", "dirty", "map2", "appel1", "appel2"}


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> paper.Programs:
    return paper.build_all(tmp_path_factory.mktemp("paper"))


def by_benchmark(objects: list[dict]) -> dict[str, dict]:
    return {obj["benchmark"]: obj for obj in objects}


def test_appel_li_linux_build_checks_every_primitive(programs):
    results = run([str(programs.appel_linux), "--iterations", "50", "all"], dune=False).objects
    mprotect = by_benchmark([r for r in results if r["method"] == "mprotect"])
    assert set(mprotect) == APPEL_LI_BENCHES
    assert all(r["correct"] is True and r["per_op_cycles"] > 0 for r in mprotect.values())
    uffd = by_benchmark([r for r in results if r["method"] == "uffd"])
    assert set(uffd) == APPEL_LI_BENCHES
    assert "no userfaultfd form" in uffd["map2"]["error"]
    # The rest works wherever userfaultfd does; where it does not, each says why.
    for name in APPEL_LI_BENCHES - {"map2"}:
        assert uffd[name].get("correct") is True or uffd[name].get("error")


def test_appel_li_dune_build_checks_every_primitive(programs):
    results = by_benchmark(run([str(programs.appel_dune), "--iterations", "20", "all"],
                               dune=True).objects)
    assert set(results) == APPEL_LI_BENCHES
    for name, result in results.items():
        assert result["method"] == "dune"
        assert result["correct"] is True, f"{name}: {result}"


def test_appel_li_dune_build_started_natively_runs_under_kvmdune(programs):
    """dune_init re-executes a native start under kvmdune: the same checked results."""
    result = subprocess.run([str(programs.appel_dune), "--iterations", "10", "trap"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    trap = json.loads(result.stdout.splitlines()[-1])
    assert trap["benchmark"] == "trap" and trap["method"] == "dune" and trap["correct"]


def test_interposition_both_ways_answers_every_call(programs):
    ptrace = run([str(programs.interpose_linux), "50"], dune=False).objects[-1]
    dune = run([str(programs.interpose_dune), "20"], dune=True).objects[-1]
    assert ptrace["method"] == "ptrace" and ptrace["correct"] is True
    assert dune["method"] == "dune" and dune["correct"] is True


def test_table2_program_reports_each_operation(programs):
    for dune in (False, True):
        results = by_benchmark(run([str(programs.table2), "--iterations", "200", "syscall",
                                    "fault"], dune=dune).objects)
        assert set(results) == {"syscall", "fault"}
        assert all(r["per_op_cycles"] > 0 and r["tsc_ghz"] > 0 for r in results.values())


def test_bench_paper_quick_prints_both_tables_and_the_chart(tmp_path):
    pytest.importorskip("matplotlib")
    stem = tmp_path / "paper"
    result = subprocess.run([sys.executable, "-m", "kvmdune", "bench", "paper", "--quick",
                             "--samples", "1", "--json", "--chart", str(stem)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data["platform"]
    assert [row["operation"] for row in data["table2"]] == list(paper.TABLE2)
    assert [row["operation"] for row in data["table3"]] == [
        "interpose", *paper.TABLE3_APPEL, *paper.SUITE_REST]
    for row in data["table2"] + data["table3"]:
        assert row["kvmdune"][0]["ns"] > 0, row
        assert row["linux"][0]["ns"] > 0, row
    assert (stem.with_suffix(".svg").read_text().count("<svg") == 1
            and stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n")


def test_report_marks_missing_figures_and_leaves_out_unchecked_paper_figures():
    rows = [paper.PaperRow("map2", [paper.Figure("mprotect+SIGSEGV", 6000, 2300),
                                    paper.Figure("userfaultfd-wp", None, None, "no form")],
                           [paper.Figure("Dune API", 60000, 23000)])]
    text = paper.format_report("software KVM", rows, rows, 1)
    assert "n/a: userfaultfd-wp: no form" in text and "10.0x" in text
    assert paper.PAPER_NOTE in text


def test_bench_help_lists_the_new_suites():
    result = subprocess.run([sys.executable, "-m", "kvmdune", "bench", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for suite in ("gc", "wss", "paper"):
        assert f"    {suite} " in result.stdout or f"\n    {suite}\n" in result.stdout, suite


def test_build_reports_a_compile_error(tmp_path, monkeypatch):
    from kvmdune.bench import programs as programs_module

    (tmp_path / "broken.c").write_text("int main(void) { return }\n")
    monkeypatch.setattr(programs_module, "NATIVE_DIR", tmp_path)
    with pytest.raises(programs_module.ProgramError, match="broken.c"):
        build("broken.c", tmp_path, name="broken")
