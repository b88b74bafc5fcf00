"""Build the native parts of kvmdune from source: the ring-0 trampoline (assembly),
the page-table scanner, guest-memory atomics and the fast path (C extensions), and
the Dune API's C library for guest programs (a static archive, ``kvmdune/dune/lib/libkvmdune.a``).

The trampoline is assembled by gcc/as into a tiny C extension that hands its bytes
and entry offsets to Python; no binary is ever committed.
"""

import os
import shutil
import sys
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

    def run(self) -> None:
        super().run()   # builds into build_lib, then copies extensions when in place
        if self.inplace or getattr(self, "editable_mode", False):
            built = Path(self.build_lib, DUNE_ARCHIVE)
            (ROOT / DUNE_ARCHIVE).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(built, ROOT / DUNE_ARCHIVE)

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


setup(
    ext_modules=[
        Extension(
            "kvmdune.machine._trampoline",
            sources=["kvmdune/machine/native/trampoline_module.c",
                     "kvmdune/machine/native/trampoline.S",
                     "kvmdune/machine/native/callstub.S"],
            depends=["kvmdune/machine/native/trampoline.h"],
        ),
        Extension("kvmdune.memory._ptescan", sources=["kvmdune/memory/native/ptescan.c"]),
        Extension("kvmdune.memory._atomics", sources=["kvmdune/memory/native/atomics.c"]),
        Extension("kvmdune.dune._mirror", sources=["kvmdune/dune/vmm_native/mirror.c"],
                  extra_compile_args=["-O2"]),
        Extension("kvmdune.linux._fastpath", sources=["kvmdune/linux/native/fastpath.c"],
                  depends=["kvmdune/machine/native/callring.h",
                           "kvmdune/linux/native/vmm_calls.h"],
                  extra_compile_args=["-O2"]),
        Extension("kvmdune.linux._proclock", sources=["kvmdune/linux/native/proclock.c"],
                  depends=["kvmdune/linux/native/proclock.h"],
                  extra_compile_args=["-O2"]),
        Extension("kvmdune.dune._fastvm", sources=["kvmdune/dune/vmm_native/fastvm.c",
                                                  "kvmdune/dune/vmm_native/fastbits.c"],
                  depends=["kvmdune/dune/vmm_native/fastvm.h",
                           "kvmdune/linux/native/vmm_calls.h",
                           "kvmdune/linux/native/proclock.h",
                           "kvmdune/dune/include/kvmdune/hypercall.h"],
                  extra_compile_args=["-O2"]),
    ],
    cmdclass={"build_ext": BuildExtWithAssembly},
)
