"""C programs compiled here, run natively and under ``kvmdune run``: stdout and exit
status must match byte for byte."""

from __future__ import annotations

import os

import pytest

from .conftest import LINKS, run_dune, run_native

pytestmark = pytest.mark.kvm
ENV = {**os.environ, "KVMDUNE_TEST_VALUE": "forty two"}


def assert_same(native, dune):
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode, dune.stderr.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("link", LINKS)
def test_hello_argv_env_stderr(compiled, link):
    argv = [compiled[("hello", link)], "one", "two words", ""]
    native, dune = run_native(argv, env=ENV), run_dune(argv, env=ENV)
    assert_same(native, dune)
    assert b"this goes to stderr" in dune.stderr


@pytest.mark.parametrize("link", LINKS)
def test_file_io_in_a_temp_dir(compiled, link, tmp_path):
    (tmp_path / "native").mkdir()
    (tmp_path / "dune").mkdir()
    native = run_native([compiled[("fileio", link)], str(tmp_path / "native")])
    dune = run_dune([compiled[("fileio", link)], str(tmp_path / "dune")])
    assert_same(native, dune)
    assert sorted(os.listdir(tmp_path / "dune")) == sorted(os.listdir(tmp_path / "native"))


@pytest.mark.parametrize("program", ["alloc", "tls", "misc", "signals", "net"])
@pytest.mark.parametrize("link", LINKS)
def test_programs_match_native(compiled, program, link):
    argv = [compiled[(program, link)]]
    assert_same(run_native(argv), run_dune(argv))


@pytest.mark.parametrize("link", LINKS)
def test_segfault_is_139_with_a_crash_report(compiled, link):
    dune = run_dune([compiled[("crash", link)], "segv"])
    assert dune.returncode == 139
    report = dune.stderr.decode()
    assert "SIGSEGV" in report and "rip=" in report and "code:" in report


@pytest.mark.parametrize("link", LINKS)
def test_abort_is_134(compiled, link):
    assert run_dune([compiled[("crash", link)], "abort"]).returncode == 134


@pytest.mark.parametrize("code", [0, 1, 42, 127, 128, 255, 256, 300])
def test_exit_codes(compiled, code):
    argv = [compiled[("crash", "static")], "exit", str(code)]
    assert_same(run_native(argv), run_dune(argv))


@pytest.mark.parametrize("link", LINKS)
def test_shared_mappings_reach_files_and_children(compiled, link, tmp_path):
    native = run_native([compiled[("shared", link)], str(tmp_path / "native.dat")])
    dune = run_dune([compiled[("shared", link)], str(tmp_path / "dune.dat")])
    assert_same(native, dune)
    assert (tmp_path / "dune.dat").read_bytes() == (tmp_path / "native.dat").read_bytes()
