"""Sandbox policies as data: profiles, TOML policy files, command-line options, and
how they combine.

Precedence, lowest first: the profile's defaults, then the policy file, then the
command-line options. Lists (paths, system calls, environment) add up; single
values (network, limits, profile) are replaced by the later source; a system call
both allowed and denied is denied.
"""

from __future__ import annotations

import enum
import os
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any

#: Paths every profile may read: the dynamic loader's and libraries' places, and the
#: harmless devices.
LIBRARY_PATHS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache")
HARMLESS_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")


class Profile(str, enum.Enum):
    STRICT = "strict"      # the program, its libraries, three devices; nothing else
    READONLY = "readonly"  # strict + the current directory tree, read-only
    OPEN = "open"          # everything allowed
    TRACE = "trace"        # open, with every call audited


class NetMode(str, enum.Enum):
    NONE = "none"
    LOOPBACK = "loopback"  # AF_UNIX inside allowed directories, 127.0.0.0/8 and ::1
    ALL = "all"


class OnDeny(str, enum.Enum):
    ERRNO = "errno"  # EACCES / EPERM to the guest
    KILL = "kill"    # end the guest with SIGSYS


class PolicyError(ValueError):
    """A policy file or option that does not make sense (the message says why)."""


@dataclass(frozen=True)
class Limits:
    memory: int | None = None      # bytes of guest memory
    cpu: float | None = None       # seconds of CPU time per process
    cpu_total: float | None = None # seconds of CPU time of all its processes together
    wall: float | None = None      # seconds of wall time for the whole run
    processes: int | None = None   # processes alive at once (the first included)
    file_size: int | None = None   # bytes one file may grow to
    fds: int | None = None         # open descriptors


@dataclass(frozen=True)
class Policy:
    profile: Profile = Profile.STRICT
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    execute: tuple[str, ...] = ()
    net: NetMode = NetMode.NONE
    allow_syscalls: frozenset[str] = frozenset()
    deny_syscalls: frozenset[str] = frozenset()
    limits: Limits = Limits()
    env: tuple[tuple[str, str], ...] = ()
    clear_env: bool = False
    on_deny: OnDeny = OnDeny.ERRNO
    source: tuple[str, ...] = field(default=(), compare=False)   # what built it

    @property
    def all_paths(self) -> bool:
        return self.profile in (Profile.OPEN, Profile.TRACE)

    @property
    def audit_everything(self) -> bool:
        return self.profile is Profile.TRACE

    def for_program(self, program: str, interpreter: str | None) -> "Policy":
        """The policy with the program (and its interpreter) readable and executable."""
        extra = tuple(p for p in (program, interpreter) if p)
        return replace(self, read=_union(self.read, extra), execute=_union(self.execute, extra))

    def describe(self) -> dict[str, Any]:
        """The effective policy, JSON-ready (``kvmdune policy show``)."""
        return {
            "profile": self.profile.value,
            "paths": {"read": list(self.read), "write": list(self.write),
                      "execute": list(self.execute), "everything": self.all_paths},
            "network": self.net.value,
            "syscalls": {"allow": sorted(self.allow_syscalls),
                         "deny": sorted(self.deny_syscalls)},
            "limits": {k: v for k, v in vars(self.limits).items() if v is not None},
            "environment": {"clear": self.clear_env, "set": dict(self.env)},
            "on_deny": self.on_deny.value,
            "audit_every_call": self.audit_everything,
            "built_from": list(self.source),
        }


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(first + second))


def _absolute(paths, base: str | None = None) -> tuple[str, ...]:
    out = []
    for path in paths:
        if not isinstance(path, str) or not path:
            raise PolicyError(f"a path must be a non-empty string, not {path!r}")
        out.append(os.path.normpath(os.path.join(base or os.getcwd(), os.path.expanduser(path))))
    return tuple(out)


def profile_defaults(profile: Profile, cwd: str | None = None) -> Policy:
    policy = Policy(profile=profile, read=LIBRARY_PATHS + HARMLESS_DEVICES,
                    write=("/dev/null",), source=(f"profile {profile.value}",))
    if profile is Profile.READONLY:
        policy = replace(policy, read=_union(policy.read, (os.path.abspath(cwd or os.getcwd()),)))
    if profile in (Profile.OPEN, Profile.TRACE):
        policy = replace(policy, net=NetMode.ALL)
    return policy


_LIMIT_KEYS = {"memory": "memory", "cpu": "cpu", "cpu-total": "cpu_total", "wall": "wall",
               "max-procs": "processes", "max-fsize": "file_size", "max-fds": "fds"}


def parse_size(value: Any, what: str) -> int:
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str):
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        scale = units.get(text[-1:], 1)
        number = text[:-1] if text[-1:] in units else text
        try:
            size = int(float(number) * scale)
        except ValueError:
            size = 0
        if size > 0:
            return size
    raise PolicyError(f"{what}: not a size: {value!r} (use e.g. 4096, 64K, 512M, 4G)")


def parse_seconds(value: Any, what: str) -> float:
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    raise PolicyError(f"{what}: not a positive number of seconds: {value!r}")


def merge(policy: Policy, *, read=(), write=(), execute=(), net: str | None = None,
          allow_syscalls=(), deny_syscalls=(), limits: dict[str, Any] | None = None,
          env: dict[str, str] | None = None, clear_env: bool | None = None,
          on_deny: str | None = None, source: str = "", base: str | None = None) -> Policy:
    """``policy`` with one more layer of settings on top (lists add up)."""
    from ..linux.syscall_table import BY_NAME

    for name in list(allow_syscalls) + list(deny_syscalls):
        if name not in BY_NAME:
            raise PolicyError(f"unknown system call {name!r} (see `kvmdune syscalls`)")
    new_limits = policy.limits
    for key, value in (limits or {}).items():
        if key not in _LIMIT_KEYS:
            raise PolicyError(f"unknown limit {key!r} (known: {', '.join(_LIMIT_KEYS)})")
        attribute = _LIMIT_KEYS[key]
        if attribute in ("memory", "file_size"):
            value = parse_size(value, key)
        elif attribute in ("cpu", "cpu_total", "wall"):
            value = parse_seconds(value, key)
        elif not isinstance(value, int) or value <= 0:
            raise PolicyError(f"{key}: not a positive integer: {value!r}")
        new_limits = replace(new_limits, **{attribute: value})
    try:
        new_net = NetMode(net) if net is not None else policy.net
        new_on_deny = OnDeny(on_deny) if on_deny is not None else policy.on_deny
    except ValueError as exc:
        raise PolicyError(str(exc)) from exc
    return replace(
        policy,
        read=_union(policy.read, _absolute(read, base)),
        write=_union(policy.write, _absolute(write, base)),
        execute=_union(policy.execute, _absolute(execute, base)),
        net=new_net,
        allow_syscalls=policy.allow_syscalls | frozenset(allow_syscalls),
        deny_syscalls=policy.deny_syscalls | frozenset(deny_syscalls),
        limits=new_limits,
        env=policy.env + tuple((env or {}).items()),
        clear_env=policy.clear_env if clear_env is None else clear_env,
        on_deny=new_on_deny,
        source=policy.source + ((source,) if source else ()),
    )


_FILE_KEYS = {"profile", "paths", "network", "syscalls", "limits", "environment", "on_deny"}


def load_policy_file(path: str, base: Policy | None = None) -> Policy:
    """A TOML policy file on top of ``base`` (or of the profile it names)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from exc
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise PolicyError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(_FILE_KEYS)})")
    if "profile" in data:
        try:
            base = profile_defaults(Profile(data["profile"]))
        except ValueError as exc:
            raise PolicyError(f"{path}: {exc}") from exc
    base = base or profile_defaults(Profile.STRICT)
    paths = data.get("paths", {})
    syscalls = data.get("syscalls", {})
    environment = data.get("environment", {})
    directory = os.path.dirname(os.path.abspath(path))
    try:
        return merge(base, read=paths.get("read", ()), write=paths.get("write", ()),
                     execute=paths.get("execute", ()), net=data.get("network"),
                     allow_syscalls=syscalls.get("allow", ()),
                     deny_syscalls=syscalls.get("deny", ()), limits=data.get("limits"),
                     env=environment.get("set"), clear_env=environment.get("clear"),
                     on_deny=data.get("on_deny"), source=f"file {path}", base=directory)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from exc
