"""Linux's transparent-huge-page rules as kvmdune/linux/thp.py applies them: the
host's mode read from a sysfs tree, and which mappings get 2 MiB pages under each
mode, advice and prctl(PR_SET_THP_DISABLE) state (the guest-visible result on this
host's mode is compared with Linux in tests/acceptance/test_transparent_huge_pages.py)."""

from __future__ import annotations

import pytest

from kvmdune.linux.thp import (PR_THP_DISABLE_EXCEPT_ADVISED, HugeAdvice, HugePageChoice,
                               ThpMode, ThpPolicy, read_host_mode)

NONE, HUGE, NOHUGE = HugeAdvice.NONE, HugeAdvice.HUGEPAGE, HugeAdvice.NOHUGEPAGE
DISABLED, EXCEPT_ADVISED = 1, 1 | PR_THP_DISABLE_EXCEPT_ADVISED


def sysfs(tmp_path, top: str, pmd_size: str | None) -> str:
    (tmp_path / "enabled").write_text(top + "\n")
    if pmd_size is not None:
        (tmp_path / "hugepages-2048kB").mkdir()
        (tmp_path / "hugepages-2048kB" / "enabled").write_text(pmd_size + "\n")
    return str(tmp_path)


@pytest.mark.parametrize("top, pmd_size, mode", [
    ("always [madvise] never", "always [inherit] madvise never", ThpMode.MADVISE),
    ("[always] madvise never", None, ThpMode.ALWAYS),
    ("always madvise [never]", "[always] inherit madvise never", ThpMode.ALWAYS),
    ("[always] madvise never", "always inherit madvise [never]", ThpMode.NEVER),
])
def test_the_2mib_size_setting_wins_unless_it_inherits(tmp_path, top, pmd_size, mode):
    assert read_host_mode(sysfs(tmp_path, top, pmd_size)) is mode


def test_a_kernel_without_thp_reads_as_never(tmp_path):
    assert read_host_mode(str(tmp_path / "missing")) is ThpMode.NEVER


@pytest.mark.parametrize("mode, advice, disabled, allowed", [
    (ThpMode.ALWAYS, NONE, 0, True),
    (ThpMode.ALWAYS, NOHUGE, 0, False),
    (ThpMode.ALWAYS, NONE, DISABLED, False),
    (ThpMode.ALWAYS, HUGE, DISABLED, False),
    (ThpMode.ALWAYS, NONE, EXCEPT_ADVISED, False),
    (ThpMode.ALWAYS, HUGE, EXCEPT_ADVISED, True),
    (ThpMode.MADVISE, NONE, 0, False),
    (ThpMode.MADVISE, HUGE, 0, True),
    (ThpMode.MADVISE, HUGE, EXCEPT_ADVISED, True),
    (ThpMode.MADVISE, HUGE, DISABLED, False),
    (ThpMode.NEVER, HUGE, 0, False),
])
def test_linux_rules(mode, advice, disabled, allowed):
    assert ThpPolicy(mode, HugePageChoice.LINUX).allows(advice, disabled) is allowed


@pytest.mark.parametrize("mode", list(ThpMode))
def test_the_variable_overrides_every_rule(mode):
    forced, off = ThpPolicy(mode, HugePageChoice.FORCED), ThpPolicy(mode, HugePageChoice.OFF)
    for advice in HugeAdvice:
        for disabled in (0, DISABLED, EXCEPT_ADVISED):
            assert forced.allows(advice, disabled) and not off.allows(advice, disabled)
    assert forced.may_map_huge and not off.may_map_huge
    assert ThpPolicy(mode, HugePageChoice.LINUX).may_map_huge is (mode is not ThpMode.NEVER)
