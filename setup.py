"""Build the native parts of kvmdune from source: the ring-0 trampoline (assembly)
the page-table scanner and guest-memory atomics (C).

The trampoline is assembled by gcc/as into a tiny C extension that hands its bytes
and entry offsets to Python; no binary is ever committed.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExtWithAssembly(build_ext):
    """build_ext that also compiles ``.S`` sources (gcc runs the preprocessor and as)."""

    def build_extensions(self) -> None:
        self.compiler.src_extensions.append(".S")
        super().build_extensions()


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
        Extension("kvmdune.linux._fastpath", sources=["kvmdune/linux/native/fastpath.c"],
                  depends=["kvmdune/machine/native/callring.h"],
                  extra_compile_args=["-O2"]),
    ],
    cmdclass={"build_ext": BuildExtWithAssembly},
)
