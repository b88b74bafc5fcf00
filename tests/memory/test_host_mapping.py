"""HostMapping's answer to "can the VMM read these pages without a SIGBUS": a shared
file mapping's pages past the end of the file cannot (the kernel would kill the
VMM on a copy), and the answer follows the file as it grows and shrinks."""

from __future__ import annotations

import mmap
import os

import pytest

from kvmdune.memory.host_mapping_unsafe import HostMapping

PAGE = mmap.PAGESIZE


@pytest.fixture
def file_of(tmp_path):
    opened = []

    def make(size: int) -> int:
        fd = os.open(tmp_path / f"file{len(opened)}", os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, size)
        opened.append(fd)
        return fd
    yield make
    for fd in opened:
        os.close(fd)


def test_pages_past_the_end_are_not_readable(file_of):
    fd = file_of(5)
    mapping = HostMapping(8 * PAGE, fd=fd)
    try:
        assert mapping.readable(0, PAGE)                  # the last page, partly the file's
        assert not mapping.readable(PAGE, PAGE)
        assert not mapping.readable(0, 2 * PAGE)          # any page past the end counts
        assert mapping.readable_end() == PAGE
        os.ftruncate(fd, 5 * PAGE + 1)                     # grown: six pages now
        assert mapping.readable(5 * PAGE, PAGE) and not mapping.readable(6 * PAGE, PAGE)
        assert mapping.readable_end() == 6 * PAGE
        assert mapping.view[5 * PAGE] == 0                # and the VMM reads it
        os.ftruncate(fd, 0)
        assert mapping.readable_end() == 0
    finally:
        mapping.close()


def test_a_mapping_within_its_file_is_readable_whole(file_of):
    mapping = HostMapping(4 * PAGE, fd=file_of(16 * PAGE), offset=8 * PAGE)
    try:
        assert mapping.readable_end() == 4 * PAGE
        assert mapping.readable(0, 4 * PAGE)
    finally:
        mapping.close()


def test_anonymous_memory_is_readable():
    mapping = HostMapping(4 * PAGE)
    try:
        assert mapping.readable_end() == 4 * PAGE
    finally:
        mapping.close()
