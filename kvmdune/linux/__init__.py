"""kvmdune.linux: the Linux personality of a Dune-mode process: ELF loading, the
initial stack, the system call table and its handlers, memory, descriptors,
processes and signals. ``routing.ROUTES`` says who serves each system call."""
