"""Debian's busybox-static, natively and under ``kvmdune run``: same stdout, same
status, applet by applet and in shell scripts."""

from __future__ import annotations

import os
import shutil

import pytest

from .conftest import run_dune, run_native

pytestmark = pytest.mark.kvm
BUSYBOX = shutil.which("busybox") or "/bin/busybox"

# Each case runs in a fresh directory holding ``data.txt`` and ``words.txt``.
APPLETS = {
    "echo": "echo hello world",
    "cat": "cat data.txt",
    "wc": "wc data.txt",
    "sort": "sort words.txt",
    "uniq": "sort words.txt | uniq -c",
    "head": "head -n 2 data.txt",
    "tail": "tail -n 2 data.txt",
    "cut": "cut -d: -f1,3 data.txt",
    "tr": "tr a-z A-Z < data.txt",
    "sed": "sed -e 's/line/LINE/g' -e '2d' data.txt",
    "awk": "awk -F: '{ s += $3 } END { print NR, s }' data.txt",
    "grep": "grep -E 'two|four' data.txt",
    "grep-count": "grep -c line data.txt",
    "find": "mkdir -p a/b && touch a/b/c a/d && find . -name '[cd]' | sort",
    "ls-l": "touch -d 2001-02-03T04:05:06 f && chmod 640 f && ls -l f | cut -c1-10,35-",
    "cp": "cp data.txt copy.txt && cat copy.txt",
    "mv": "mv data.txt moved.txt && ls",
    "rm": "rm data.txt && ls",
    "mkdir": "mkdir -p x/y/z && find x | sort",
    "tar": "mkdir t && echo in > t/f && tar cf t.tar t && rm -r t && tar xf t.tar && cat t/f",
    "gzip": "gzip -c data.txt | gunzip -c",
    "bzip2": "bzip2 -c data.txt | bzip2 -dc | wc -c",
    "sha256sum": "sha256sum data.txt words.txt",
    "md5sum": "md5sum data.txt",
    "base64": "base64 data.txt | base64 -d",
    "od": "od -c data.txt | head -n 3",
    "seq": "seq 3 3 20",
    "expr": "expr 6 \\* 7 + 1",
    "printf": "printf '%05d|%-4s|%x\\n' 42 ab 255",
    "date": "date -u -d @0",
    "xargs": "printf 'a\\nb\\nc\\n' | xargs echo got",
    "basename": "basename /a/b/c.txt .txt; dirname /a/b/c.txt",
    "stat": "stat -c '%s %n' data.txt",
    "env": "env -i A=1 B=2 env | sort",
    "test": "test -f data.txt && echo yes; [ 3 -lt 2 ] || echo no",
    "true-false": "true; echo $?; false; echo $?",
    "rev": "rev data.txt",
    "nl": "nl data.txt",
    "paste": "paste -d, data.txt words.txt",
    "comm": "sort words.txt > s1 && sort -r words.txt | sort > s2 && comm -12 s1 s2",
    "diff": "echo a > p && echo b > q && diff p q; echo status $?",
    "fold": "echo abcdefghij | fold -w 3",
    "dd": "dd if=data.txt bs=4 count=2 2>/dev/null",
    "yes": "yes y | head -n 3",
    "sleep": "sleep 0.1 && echo slept",
    "hexdump": "echo hi | hexdump -C",
    "cmp": "cmp data.txt data.txt && echo same",
    "id": "id -u",
    "pwd": "cd / && pwd",
    "readlink": "ln -s data.txt link && readlink link",
}

SCRIPTS = {
    "loops-functions": """
        total=0
        add() { total=$((total + $1)); }
        for i in 1 2 3 4 5; do add $i; done
        i=0; while [ $i -lt 3 ]; do i=$((i+1)); echo "loop $i"; done
        echo "total $total"
        case foo in f*) echo matched;; esac
    """,
    "pipes-substitution": """
        n=$(cat data.txt | grep line | wc -l)
        echo "lines: $n"
        echo "$(echo inner $(echo nested))"
        cat words.txt | sort | uniq | tr '\\n' ' '; echo
    """,
    "heredoc-subshell": """
        cat <<EOF
        value: $((2 + 3))
        EOF
        (cd /tmp && pwd)
        pwd | sed 's#.*/##' | wc -c
        { echo grouped; echo lines; } | wc -l
    """,
    "exit-status-and-traps": """
        trap 'echo trapped' EXIT
        sh -c 'exit 7'; echo "child status $?"
        false || echo "or works"
        true && echo "and works"
    """,
}


def _workdir(tmp_path, name: str):
    directory = tmp_path / name / "work"     # same name on both sides
    directory.mkdir(parents=True)
    (directory / "data.txt").write_text("line one:x:1\nline two:y:2\nline three:z:3\nfour:w:4\n")
    (directory / "words.txt").write_text("pear\napple\npear\nfig\napple\nkiwi\n")
    return directory


def _compare(tmp_path, script: str):
    native_dir, dune_dir = _workdir(tmp_path, "native"), _workdir(tmp_path, "dune")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    native = run_native([BUSYBOX, "sh", "-c", script], cwd=native_dir, env=env)
    dune = run_dune([BUSYBOX, "sh", "-c", script], cwd=dune_dir, env=env)
    assert dune.stdout == native.stdout, dune.stderr.decode(errors="replace")[-3000:]
    assert dune.returncode == native.returncode, dune.stderr.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("applet", APPLETS)
def test_applet(tmp_path, applet):
    _compare(tmp_path, APPLETS[applet])


@pytest.mark.parametrize("name", SCRIPTS)
def test_sh_script(tmp_path, name):
    script = "\n".join(line.strip() for line in SCRIPTS[name].strip().splitlines())
    _compare(tmp_path, script)


def test_at_least_forty_applets():
    assert len(APPLETS) >= 40
