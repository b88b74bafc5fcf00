"""No stale guest translation survives munmap, mremap or mprotect, checked from the
guest (programs/stale_translations.c), with 2 MiB pages (KVMDUNE_HUGE_PAGES=1), without
(=0), and by Linux's rules (unset: the default, kvmdune/linux/thp.py).

Each case once failed on software KVM: a page-table frame freed by munmap and
reused as another region's table left the old region reaching the new region's
pages (KVM's shadow of the freed table stayed linked under the old region); a 2 MiB
frame unmapped and mapped again as a 2 MiB page elsewhere did the same; realloc's
mremap of a block of 2 MiB pages then wrote a block's last page into its first (the
chunk header), and a third mremap of the grown block failed with EFAULT. Two more
check what kvmdune leaves out: the invalidation of entries the guest never
touched, and the frames of anonymous PROT_NONE reservations."""

from __future__ import annotations

import pytest

from .conftest import LINKS, run_dune, vmm_env

pytestmark = pytest.mark.kvm
DEFAULT_SYSCALL_PATH_ONLY = True
CASES = ("table_reuse", "huge_reuse", "mremap_huge", "huge_split", "untouched_neighbours",
         "reservation")
PAGE_SIZES = {"2M": "1", "4K": "0", "default": None}
#: Every page-size mode in one link, every link in the default mode: the cases are
#: about page tables, which the link changes only by the program's own layout.
VARIANTS = ([("static", pages) for pages in PAGE_SIZES]
            + [(link, "default") for link in LINKS if link != "static"])


@pytest.mark.parametrize(("link", "pages"), VARIANTS)
def test_old_ranges_fault_and_new_ones_keep_their_data(compiled, link, pages, monkeypatch):
    if PAGE_SIZES[pages] is None:
        monkeypatch.delenv("KVMDUNE_HUGE_PAGES", raising=False)
    else:
        monkeypatch.setenv("KVMDUNE_HUGE_PAGES", PAGE_SIZES[pages])
    result = run_dune([compiled[("stale_translations", link)]], env=vmm_env())
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output + result.stderr.decode(errors="replace")[-2000:]
    assert output.split() == [word for case in CASES for word in ("ok", case)]
