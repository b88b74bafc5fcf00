"""How a guest process ended, and what a shell makes of it."""

from __future__ import annotations

from dataclasses import dataclass

from .abi import signal_name


@dataclass(frozen=True)
class ExitStatus:
    """How the guest ended: an exit code, or a signal."""

    code: int | None = None
    signal: int | None = None

    @property
    def shell_status(self) -> int:
        """What a shell reports: the code, or 128 + the signal number."""
        return self.code if self.code is not None else 128 + (self.signal or 0)

    def describe(self) -> str:
        if self.code is not None:
            return f"exited with status {self.code}"
        return f"killed by {signal_name(self.signal or 0) or self.signal}"
