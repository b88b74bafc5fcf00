"""kvmdune: Dune (Belay et al., OSDI 2012) rebuilt on the standard Linux KVM API.

Layers, bottom up (a layer imports only the ones below it):
``kvm`` (the /dev/kvm API), ``memory`` (guest memory and page tables),
``machine`` (boot state, trampoline, run loop, events), ``linux`` (the Linux
personality), ``sandbox`` (policies), ``dune`` (the Dune API), ``bench`` and ``cli``.
"""

import os as _os

__version__ = "0.1.0"
#: The native start-up client setup.py builds into the package (cli/native/client.c):
#: the ``kvmdune`` command's own, which the resident path (cli/resident.py) serves
#: and the start-up benchmark (bench/run.py) times.
CLIENT_PATH = _os.path.join(_os.path.dirname(__file__), "cli", "kvmdune-client")
