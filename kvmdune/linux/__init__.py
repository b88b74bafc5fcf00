"""kvmdune.linux: the Linux personality of a Dune-mode process: ELF loading, the
initial stack, the system call table and its handlers, memory, descriptors,
processes and signals."""

# Importing the handler modules registers their system calls.
from . import (sys_file, sys_memory, sys_net, sys_poll, sys_process,  # noqa: F401
               sys_resource, sys_signal)
