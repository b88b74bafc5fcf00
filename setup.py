"""Build the native parts of kvmdune from source: the ring-0 trampoline (assembly),
the page-table scanner, guest-memory atomics and the fast path (C extensions), and
the Dune API's C library for guest programs (a static archive, ``kvmdune/dune/lib/libkvmdune.a``).

The trampoline is assembled by gcc/as into a tiny C extension that hands its bytes
and entry offsets to Python; no binary is ever committed.
"""

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
DUNE = Path("kvmdune", "dune")
DUNE_ARCHIVE = DUNE / "lib" / "libkvmdune.a"
#: The Dune library's sources: every C and assembly file of its native directory
#: (the page-table part's vm.c included when it exists).
DUNE_LIBRARY_SOURCES = sorted(str(p) for pattern in ("*.c", "*.S")
                              for p in (DUNE / "native").glob(pattern))
#: The start-up client (kvmdune/cli/resident.py), an executable inside the package.
CLIENT_SOURCE = Path("kvmdune", "cli", "native", "client.c")
CLIENT = Path("kvmdune", "cli", "kvmdune-client")
#: The installed ``kvmdune`` command: a two-line shell script that executes the
#: client (a console script would start Python with `site` first, which alone takes
#: longer than a whole run may).
LAUNCHER = Path("build", "launcher", "kvmdune")


def c_string(text: str) -> str:
    """``text`` as a C string literal, for a -D definition."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class BuildExtWithAssembly(build_ext):
    """build_ext that also compiles ``.S`` sources (gcc runs the preprocessor and as),
    and builds the Dune library that guest programs link (``kvmdune config --libs``)."""

    def build_extensions(self) -> None:
        if ".S" not in self.compiler.src_extensions:
            self.compiler.src_extensions.append(".S")
        super().build_extensions()
        self.build_dune_library()
        self.build_client()

    def run(self) -> None:
        super().run()   # builds into build_lib, then copies extensions when in place
        if self.inplace or getattr(self, "editable_mode", False):
            built = Path(self.build_lib, DUNE_ARCHIVE)
            (ROOT / DUNE_ARCHIVE).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(built, ROOT / DUNE_ARCHIVE)
            # Beside, then renamed over: the old client may be running (ETXTBSY).
            staged = (ROOT / CLIENT).with_suffix(".new")
            shutil.copy2(Path(self.build_lib, CLIENT), staged)
            os.replace(staged, ROOT / CLIENT)

    def build_dune_library(self) -> None:
        """libkvmdune.a, position-independent so that static and dynamic programs
        link it alike. The interpreter and source tree that run kvmdune are baked
        in: dune_init re-executes a program started natively under ``kvmdune run``."""
        output = Path(self.build_lib, DUNE_ARCHIVE.parent)
        output.mkdir(parents=True, exist_ok=True)
        objects = self.compiler.compile(
            DUNE_LIBRARY_SOURCES, output_dir=self.build_temp,
            include_dirs=[str(DUNE / "include")],
            macros=[("KVMDUNE_PYTHON", c_string(sys.executable)),
                    ("KVMDUNE_SOURCE_ROOT", c_string(str(ROOT)))],
            extra_postargs=["-fPIC", "-O2", "-Wall", "-Wextra"],
            depends=[str(p) for p in (DUNE / "include").rglob("*.h")])
        target = output / DUNE_ARCHIVE.name
        if target.exists():
            os.unlink(target)          # ar would add to a stale archive
        self.compiler.create_static_lib(objects, "kvmdune", output_dir=str(output))

    def build_client(self) -> None:
        """The native start-up client, with the interpreter that runs kvmdune baked
        in (it finds the package beside itself)."""
        objects = self.compiler.compile(
            [str(CLIENT_SOURCE)], output_dir=self.build_temp,
            macros=[("KVMDUNE_PYTHON", c_string(sys.executable)),
                    ("KVMDUNE_PACKAGE_ROOT", c_string(str(ROOT)))],
            extra_postargs=["-O2", "-Wall", "-Wextra"])
        target = Path(self.build_lib, CLIENT)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.compiler.link_executable(objects, target.name, output_dir=str(target.parent))


def write_launcher() -> str:
    """The ``kvmdune`` command: the client of an installed package, else of this
    source tree (an editable install), else the in-process Python path."""
    candidates = [Path(sysconfig.get_path("purelib"), CLIENT), ROOT / CLIENT]
    path = ROOT / LAUNCHER
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        "# kvmdune: its native start-up client (kvmdune/cli/native/client.c).\n"
        f"for client in {' '.join(shlex_quote(str(c)) for c in candidates)}; do\n"
        '    [ -x "$client" ] && exec "$client" "$@"\n'
        "done\n"
        f'exec {shlex_quote(sys.executable)} -m kvmdune "$@"\n')
    path.chmod(0o755)
    return str(LAUNCHER)


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


setup(
    ext_modules=[
        Extension(
            "kvmdune.machine._trampoline",
            sources=["kvmdune/machine/native/trampoline_module.c",
                     "kvmdune/machine/native/trampoline.S",
                     "kvmdune/machine/native/callstub.S"],
            depends=["kvmdune/machine/native/trampoline.h"],
        ),
        Extension("kvmdune.machine._sigpending", sources=["kvmdune/machine/native/sigpending.c"]),
        Extension("kvmdune.memory._ptescan", sources=["kvmdune/memory/native/ptescan.c"]),
        Extension("kvmdune.memory._atomics", sources=["kvmdune/memory/native/atomics.c"]),
        Extension("kvmdune.dune._mirror", sources=["kvmdune/dune/vmm_native/mirror.c"],
                  extra_compile_args=["-O2"]),
        Extension("kvmdune.linux._fastpath", sources=["kvmdune/linux/native/fastpath.c",
                                                    "kvmdune/linux/native/fdstore.c",
                                                    "kvmdune/linux/native/namedstat.c",
                                                    "kvmdune/linux/native/sigstore.c"],
                  depends=["kvmdune/machine/native/callring.h",
                           "kvmdune/linux/native/fdstore.h",
                           "kvmdune/linux/native/namedstat.h",
                           "kvmdune/linux/native/sigstore.h",
                           "kvmdune/linux/native/proclock.h",
                           "kvmdune/linux/native/vmm_calls.h",
                           "kvmdune/linux/native/call_wait.h",
                           "kvmdune/machine/native/reentry.h"],
                  extra_compile_args=["-O2"]),
        Extension("kvmdune.linux._waitrunner", sources=["kvmdune/linux/native/waitrunner.c"],
                  depends=["kvmdune/machine/native/reentry.h",
                           "kvmdune/machine/native/trampoline.h",
                           "kvmdune/linux/native/call_wait.h"],
                  extra_compile_args=["-O2"]),
        Extension("kvmdune.linux._proclock", sources=["kvmdune/linux/native/proclock.c"],
                  depends=["kvmdune/linux/native/proclock.h"],
                  extra_compile_args=["-O2"]),
        Extension("kvmdune.dune._upcall", sources=["kvmdune/dune/vmm_native/upcall.c"],
                  depends=["kvmdune/dune/vmm_native/upcall.h",
                           "kvmdune/dune/include/kvmdune/upcall.h",
                           "kvmdune/machine/native/trampoline.h",
                           "kvmdune/machine/native/reentry.h",
                           "kvmdune/linux/native/call_wait.h",
                           "kvmdune/linux/native/proclock.h"],
                  extra_compile_args=["-O2"]),
        Extension("kvmdune.dune._fastvm", sources=["kvmdune/dune/vmm_native/fastvm.c",
                                                  "kvmdune/dune/vmm_native/fastbits.c",
                                                  "kvmdune/dune/vmm_native/fastsync.c"],
                  depends=["kvmdune/dune/vmm_native/fastvm.h",
                           "kvmdune/linux/native/vmm_calls.h",
                           "kvmdune/linux/native/proclock.h",
                           "kvmdune/dune/include/kvmdune/hypercall.h"],
                  extra_compile_args=["-O2"]),
    ],
    cmdclass={"build_ext": BuildExtWithAssembly},
    scripts=[write_launcher()],
)
