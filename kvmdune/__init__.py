"""kvmdune: Dune (Belay et al., OSDI 2012) rebuilt on the standard Linux KVM API.

Layers, bottom up (a layer imports only the ones below it):
``kvm`` (the /dev/kvm API), ``memory`` (guest memory and page tables),
``machine`` (boot state, trampoline, run loop, events), ``linux`` (the Linux
personality), ``sandbox`` (policies), ``dune`` (the Dune API), ``bench`` and ``cli``.
"""

__version__ = "0.1.0"
