"""Working-set size over time, from the guest's accessed and dirty bits (``kvmdune
wss``): every interval, the pages the program touched and the pages it wrote since
the previous sample.

The sampler reads the bits through a reader of its own (``kvmdune.memory.page_bits``),
so the program's own users of /proc/self/clear_refs, the Dune API's readers and
mincore keep seeing theirs. It samples from the run loop at an event boundary, the
vCPU stopped (``runner.Ticker``): reading and clearing bits while the vCPU runs
would race with the MMU setting them.

Each sample clears the bits it read, and cleared bits need an invalidation before
the guest runs again (a cleared A bit: the host-side mprotect pair over the frames
on software KVM; a cleared D bit: KVM's dirty log), whose cost grows with the pages
touched. The sampler times every sample, invalidation included: that is the
overhead the program pays for being watched, beside the faults it takes afterwards
to set the bits again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..memory import PTE, AddressSpace
from ..memory.page_bits import BitReader
from ..memory.pagetable import USER_SPACE_END

#: The sampler's reader of the accessed and dirty bits.
READER_NAME = "kvmdune-wss"


@dataclass(frozen=True)
class WorkingSetSample:
    """One sample: pages (4 KiB) touched and written since the previous one."""

    time_s: float          # since the run started
    touched: int           # accessed (read or written) since the previous sample
    written: int           # written since the previous sample
    cost_s: float          # reading and clearing the bits, invalidation included


class WorkingSetSampler:
    """A ``runner.Ticker``: samples the current address space every ``interval``
    seconds (an execve starts a new space: its first sample counts everything since
    the program was loaded)."""

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError("the sampling interval must be positive")
        self.interval = interval
        self.samples: list[WorkingSetSample] = []
        self.started = time.monotonic()
        self._space: AddressSpace | None = None
        self._reader: BitReader | None = None

    def tick(self, process) -> None:
        self.samples.append(self.sample(process.space))

    def finish(self, process) -> None:
        """The program exited: one last sample for the time since the previous one."""
        if process.space is not None:
            self.tick(process)
        self.close()

    def sample(self, space: AddressSpace) -> WorkingSetSample:
        """Read and clear this sampler's A and D bits over the user half of ``space``."""
        started = time.monotonic()
        reader = self._reader_for(space)
        with space.batch():           # one invalidation for both kinds
            touched = _read_and_clear(reader, PTE.ACCESSED)
            written = _read_and_clear(reader, PTE.DIRTY)
        done = time.monotonic()
        return WorkingSetSample(time_s=done - self.started, touched=touched,
                                written=written, cost_s=done - started)

    def close(self) -> None:
        """Give the reader's page-table bits back."""
        if self._reader is not None and not self._reader.closed:
            self._reader.close()
        self._reader = self._space = None

    def _reader_for(self, space: AddressSpace) -> BitReader:
        if space is not self._space:
            # A new program image (execve): the old space and its reader are gone.
            self._space, self._reader = space, space.page_bits.reader(READER_NAME)
        return self._reader


def _read_and_clear(reader: BitReader, kind: PTE) -> int:
    """The 4 KiB pages with ``kind`` set for ``reader`` (a 2 MiB page counts 512),
    then cleared for it."""
    pages = reader.count(0, USER_SPACE_END, kind)
    reader.read(0, USER_SPACE_END, kind, clear=True)
    return pages
