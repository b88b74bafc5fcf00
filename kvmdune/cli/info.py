"""``kvmdune info``: can this machine run kvmdune, on what, and how fast."""

from __future__ import annotations

import argparse
import os
import stat
from typing import Any

# The KVM modules are imported by the functions that use them: every kvmdune
# command builds this module's parser, and only ``info`` probes the device.


def __getattr__(name: str) -> Any:
    """``REPORTED_CAPS``, every capability ``info`` lists, built when first asked for."""
    if name == "REPORTED_CAPS":
        from ..kvm import Cap

        return tuple(Cap)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _device_facts(path: str) -> dict[str, Any]:
    try:
        st = os.stat(path)
    except OSError as exc:
        return {"device": path, "exists": False, "error": exc.strerror}
    return {"device": path, "exists": True, "mode": stat.filemode(st.st_mode),
            "readable_writable": os.access(path, os.R_OK | os.W_OK)}


def gather(measure: bool, seconds: float = 1.0) -> dict[str, Any]:
    """Everything ``info`` reports, as one JSON-ready object."""
    from ..kvm import REQUIRED_CAPS, Cap, Kvm, KvmError, probe_platform
    from ..kvm.system import KVM_DEVICE

    report: dict[str, Any] = {"kvm": {"available": False, "api_version": None,
                                      **_device_facts(KVM_DEVICE)},
                              "platform": None}
    try:
        with Kvm() as kvm:
            report["kvm"]["api_version"] = kvm.get_api_version()
            report["capabilities"] = {f"KVM_CAP_{cap.name}": kvm.check_extension(cap)
                                      for cap in Cap}
            kvm.require_capabilities()
    except KvmError as exc:
        report["reason"] = str(exc)
        return report
    report["kvm"]["available"] = True
    platform = probe_platform()
    report["platform"] = platform.kind.value
    report["platform_detail"] = platform.detail
    report["kvm_module"] = platform.module
    report["required_capabilities"] = [f"KVM_CAP_{cap.name}" for cap in REQUIRED_CAPS]
    if measure:
        from ..machine.probe import measure_platform

        speed = measure_platform(seconds)
        report["measurements"] = {
            "exit_round_trip_us": round(speed.exit_round_trip_us, 2),
            "syscall_round_trip_us": round(speed.syscall_round_trip_us, 2),
            "syscall_trap_us": round(speed.syscall_trap_us, 3),
            "cpl3_loop_ns_per_iteration": round(speed.cpl3_ns_per_iteration, 3),
            "cpl0_loop_ns_per_iteration": round(speed.cpl0_ns_per_iteration, 1),
            "cpl0_slowdown": round(speed.cpl0_slowdown, 1),
        }
    return report


def format_human(report: dict[str, Any]) -> str:
    from ..kvm import KVM_API_VERSION

    kvm = report["kvm"]
    lines = [f"KVM device     {kvm['device']}: "
             + (f"{kvm['mode']}, {'accessible' if kvm['readable_writable'] else 'NOT accessible'}"
                if kvm.get("exists") else "missing")]
    if not kvm["available"]:
        lines.append(f"usable         no\nreason         {report.get('reason', 'unknown')}")
        return "\n".join(lines)
    lines += [f"usable         yes (KVM API version {kvm['api_version']}; "
              f"kvmdune needs {KVM_API_VERSION})",
              f"platform       {report['platform']}: {report['platform_detail']}",
              "capabilities   " + ", ".join(
                  f"{name[8:]}={value}" for name, value in report["capabilities"].items())]
    measured = report.get("measurements")
    if measured:
        lines += [
            f"exit round trip           {measured['exit_round_trip_us']:8.2f} us "
            "(guest CPL0 `out` -> VMM -> guest)",
            f"system call round trip    {measured['syscall_round_trip_us']:8.2f} us "
            "(guest CPL3 `syscall` -> Python handler -> guest)",
            f"`syscall` instruction     {measured['syscall_trap_us']:8.2f} us "
            "(to an MSR_LSTAR stub that returns at once: the fast path's floor)",
            f"CPL3 loop iteration       {measured['cpl3_loop_ns_per_iteration']:8.3f} ns",
            f"CPL0 loop iteration       {measured['cpl0_loop_ns_per_iteration']:8.1f} ns "
            f"({measured['cpl0_slowdown']:.0f}x CPL3"
            + ("; CPL0 is emulated here)" if report["platform"] == "software" else ")"),
        ]
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="check KVM access and measure the platform",
        description="Report whether /dev/kvm is usable by kvmdune, which KVM "
                    "implementation backs it (hardware VT-x, hardware SVM, or software), "
                    "the capabilities kvmdune uses, and a one-second measurement of the "
                    "exit round trip and of guest CPL0 against CPL3 speed. Exits 1 when "
                    "KVM is not usable.")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of text")
    parser.add_argument("--no-measure", action="store_true",
                        help="skip the one-second measurements")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    report = gather(measure=not args.no_measure)
    print(json.dumps(report, indent=2) if args.json else format_human(report))
    return 0 if report["kvm"]["available"] else 1
