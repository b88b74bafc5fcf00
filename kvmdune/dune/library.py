"""Where the Dune API's C library lives in this installation, and the compiler
flags that use it (``kvmdune config``).

The package build (setup.py) compiles ``native/`` into ``lib/libkvmdune.a``
(position-independent: static and dynamic programs link it alike); programs
include ``include/dune.h``.
"""

from __future__ import annotations

from pathlib import Path

from .hypercall import ABI_VERSION

PACKAGE_DIR = Path(__file__).resolve().parent
INCLUDE_DIR = PACKAGE_DIR / "include"
LIB_DIR = PACKAGE_DIR / "lib"
ARCHIVE = LIB_DIR / "libkvmdune.a"
#: C examples shipped with the package (built and run by tests/dune).
EXAMPLES_DIR = PACKAGE_DIR / "examples"
LIBRARY_NAME = "kvmdune"


class LibraryNotBuilt(Exception):
    """The C library was not built in this installation."""

    def __init__(self) -> None:
        super().__init__(f"the Dune library is not built ({ARCHIVE} is missing): build it "
                         "with `python3 setup.py build_ext --inplace` in the source tree, "
                         "or reinstall kvmdune")


def cflags() -> list[str]:
    """What compiling a program that includes dune.h needs."""
    return [f"-I{INCLUDE_DIR}"]


def libs() -> list[str]:
    """What linking it needs (after its objects on the command line)."""
    if not ARCHIVE.exists():
        raise LibraryNotBuilt()
    return [f"-L{LIB_DIR}", f"-l{LIBRARY_NAME}"]


def pkg_config() -> str:
    """A pkg-config file describing this installation (kvmdune.pc)."""
    from .. import __version__

    return (f"prefix={PACKAGE_DIR}\n"
            "includedir=${prefix}/include\n"
            "libdir=${prefix}/lib\n\n"
            "Name: kvmdune\n"
            "Description: the Dune API (libdune-compatible) for programs run under "
            f"kvmdune (hypercall ABI {ABI_VERSION})\n"
            f"Version: {__version__}\n"
            "Cflags: -I${includedir}\n"
            f"Libs: -L${{libdir}} -l{LIBRARY_NAME}\n")
