"""kvmdune.dune: the Dune API — for guest programs, a hypercall ABI and a C header and
library (include/, native/); for tools in Python, the same operations on a running
guest process.

Page tables (``vm.py``: roots, mirrors, user views; ``api.py``: the Python side):
``PageTablesApi``, ``DuneError``, and libdune's ``PERM`` and ``PTE`` flags.
"""

from .api import DuneError, PageTablesApi
from .entries import PERM, PTE

__all__ = ["DuneError", "PageTablesApi", "PERM", "PTE"]
