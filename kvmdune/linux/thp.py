"""Transparent huge pages: when a fault in the guest's anonymous memory maps a whole
2 MiB page, by Linux's rules for this host, so that what the guest reads of its
memory (pagemap, smaps, RSS) is what Linux would show for the same program.

Linux's rules (mm/huge_memory.c, Documentation/admin-guide/mm/transhuge.rst):

- the host's mode, /sys/kernel/mm/transparent_hugepage/enabled (``always``,
  ``madvise``, ``never``; the 2 MiB size's own hugepages-2048kB/enabled wins unless
  it says ``inherit``);
- per mapping, madvise(MADV_HUGEPAGE) (VM_HUGEPAGE: huge pages even in ``madvise``
  mode) and madvise(MADV_NOHUGEPAGE) (VM_NOHUGEPAGE: never);
- per process, prctl(PR_SET_THP_DISABLE) (none at all, or with
  PR_THP_DISABLE_EXCEPT_ADVISED none but in VM_HUGEPAGE mappings), kept across
  fork and execve;
- only private anonymous memory, and only a 2 MiB-aligned block the mapping covers.

``KVMDUNE_HUGE_PAGES`` overrides the rules: ``0`` never maps 2 MiB pages, ``1``
maps them in every anonymous block that fits (what Linux's ``always`` would do
without the per-mapping and per-process opt-outs).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

HUGE_PAGES_VARIABLE = "KVMDUNE_HUGE_PAGES"
THP_SYSFS = "/sys/kernel/mm/transparent_hugepage"
#: The 2 MiB size's own setting (Linux 6.8+: multi-size THP); "inherit" defers.
PMD_SIZE_ENABLED = "hugepages-2048kB/enabled"
#: prctl(PR_SET_THP_DISABLE)'s flag (Linux 6.18): huge pages still in VM_HUGEPAGE mappings.
PR_THP_DISABLE_EXCEPT_ADVISED = 1 << 1


class ThpMode(str, enum.Enum):
    """The host's transparent huge page mode."""

    ALWAYS = "always"
    MADVISE = "madvise"
    NEVER = "never"


class HugePageChoice(str, enum.Enum):
    """What KVMDUNE_HUGE_PAGES asks: Linux's rules (unset), none (0), or everywhere (1)."""

    LINUX = "linux"
    OFF = "0"
    FORCED = "1"


class HugeAdvice(enum.IntEnum):
    """A mapping's madvise: VM_HUGEPAGE, VM_NOHUGEPAGE, or neither."""

    NONE = 0
    HUGEPAGE = 1
    NOHUGEPAGE = 2


def _selected(text: str) -> str | None:
    """The bracketed word of a sysfs choice ("always [madvise] never")."""
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def read_host_mode(root: str = THP_SYSFS) -> ThpMode:
    """The mode Linux applies to 2 MiB pages of anonymous memory on this host;
    ``never`` where the kernel has no THP."""
    choices = []
    for name in (PMD_SIZE_ENABLED, "enabled"):
        try:
            with open(os.path.join(root, name)) as f:
                choices.append(_selected(f.read()))
        except OSError:
            choices.append(None)
    pmd_size, top = choices
    chosen = top if pmd_size in (None, "inherit") else pmd_size
    try:
        return ThpMode(chosen)
    except ValueError:
        return ThpMode.NEVER


def huge_page_choice() -> HugePageChoice:
    value = os.environ.get(HUGE_PAGES_VARIABLE)
    return HugePageChoice(value) if value in ("0", "1") else HugePageChoice.LINUX


@dataclass(frozen=True)
class ThpPolicy:
    """The rules of one process: the host's mode and KVMDUNE_HUGE_PAGES."""

    mode: ThpMode
    choice: HugePageChoice

    @classmethod
    def for_host(cls) -> "ThpPolicy":
        return cls(read_host_mode(), huge_page_choice())

    @classmethod
    def current(cls) -> "ThpPolicy":
        """The rules for a process starting now: the host's mode as this VMM read it,
        KVMDUNE_HUGE_PAGES as the environment says now (a resident server's worker
        takes the client's environment after the server read the mode)."""
        return cls(HOST_POLICY.mode, huge_page_choice())

    @property
    def may_map_huge(self) -> bool:
        """Whether any mapping of any process could get a 2 MiB page."""
        if self.choice is HugePageChoice.LINUX:
            return self.mode is not ThpMode.NEVER
        return self.choice is HugePageChoice.FORCED

    def allows(self, advice: HugeAdvice, disabled: int) -> bool:
        """Whether an anonymous private mapping with ``advice`` gets 2 MiB pages in a
        process whose prctl(PR_SET_THP_DISABLE) state is ``disabled`` (0, or 1 with
        PR_THP_DISABLE_EXCEPT_ADVISED), as Linux's thp_vma_allowable_order decides."""
        if self.choice is not HugePageChoice.LINUX:
            return self.choice is HugePageChoice.FORCED
        if self.mode is ThpMode.NEVER or advice is HugeAdvice.NOHUGEPAGE:
            return False
        if disabled and not (disabled & PR_THP_DISABLE_EXCEPT_ADVISED
                             and advice is HugeAdvice.HUGEPAGE):
            return False
        return self.mode is ThpMode.ALWAYS or advice is HugeAdvice.HUGEPAGE


#: This host's rules, read once per VMM process.
HOST_POLICY = ThpPolicy.for_host()
