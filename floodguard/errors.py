"""One error root for floodguard and the exit codes of the ``floodguard`` command.

Every exception class floodguard defines derives from `FloodguardError` (a test walks the package
to keep it so). Each class carries the exit code the CLI uses when it ends a command; the CLI maps
the error to a one-line message and that code in one place (`floodguard.cli`).

Exit codes (``floodguard --help`` and the README list the same table):

====  =====================================================================================
0     success
1     failure: a runtime error (kernel, state store, fleet, NFQUEUE, feed, lab), or a
      command whose *result* is "not good": ``show`` (rules not installed), ``status``
      (a health problem), ``fleet status`` (Redis unreachable, link down), ``lab`` (an
      acceptance check failed)
2     usage error, click's own: unknown option, missing or malformed argument (including an
      address that is not an IP address, a ``--ttl`` that is not a duration). Nothing else
      uses 2.
3     configuration: the config file (or the rule templates it renders) cannot be used, or
      lacks what the command needs (``fleet status`` without ``[fleet] redis_url``)
4     refused input: well-formed but not acceptable here (banning an allow-listed or reserved
      address, a replay file that is not a readable pcap)
5     permission: not root (no CAP_NET_ADMIN), or the system denied access
130   interrupted (Ctrl-C; ``lab``)
====  =====================================================================================

An error class picks its code with the ``exit_code`` class attribute, most simply by deriving
from one of the category bases below (`ConfigurationError`, `RefusedError`, `PermissionDenied`);
a plain `FloodguardError` exits 1.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of ``floodguard`` commands (see the module docstring)."""

    OK = 0
    FAILURE = 1
    USAGE = 2  # click's usage errors only
    CONFIG = 3
    REFUSED = 4
    PERMISSION = 5
    INTERRUPTED = 130


# (code, one line) for ``floodguard --help`` and the README.
EXIT_CODES: tuple[tuple[ExitCode, str], ...] = (
    (ExitCode.OK, "success"),
    (ExitCode.FAILURE, "failure (kernel, state, fleet, queue, feed, lab); or a result that is "
                       "not good: show (not installed), status (health problem), fleet status "
                       "(Redis unreachable, link down), lab (a check failed)"),
    (ExitCode.USAGE, "usage error (bad option or argument, e.g. an address that is not an IP, "
                     "a --ttl that is not a duration)"),
    (ExitCode.CONFIG, "configuration invalid, or lacking what the command needs"),
    (ExitCode.REFUSED, "input refused (allow-listed or reserved address, a replay file "
                       "that is not a pcap)"),
    (ExitCode.PERMISSION, "not root, or permission denied"),
    (ExitCode.INTERRUPTED, "interrupted (Ctrl-C)"),
)


class FloodguardError(Exception):
    """The root of every floodguard error; ``exit_code`` is what the CLI exits with."""

    exit_code: int = ExitCode.FAILURE


class ConfigurationError(FloodguardError):
    """The configuration (file, rule templates) cannot be used for what was asked."""

    exit_code = ExitCode.CONFIG


class RefusedError(FloodguardError):
    """An operator request that is well-formed but refused (e.g. banning an allow-listed IP)."""

    exit_code = ExitCode.REFUSED


class PermissionDenied(FloodguardError):
    """The operation needs privileges this process does not have (root, CAP_NET_ADMIN)."""

    exit_code = ExitCode.PERMISSION


def exit_code_of(exc: BaseException) -> int | None:
    """The exit code for an error the CLI reports in one line, None for anything else (a bug,
    which keeps its traceback). OSError counts: a failed system call is an operational error;
    a broken pipe (``floodguard ... | head``) is left to click, which exits quietly."""
    code = getattr(exc, "exit_code", None)
    if isinstance(exc, FloodguardError) and isinstance(code, int):
        return code
    if isinstance(exc, BrokenPipeError):
        return None
    if isinstance(exc, PermissionError):
        return ExitCode.PERMISSION
    if isinstance(exc, OSError):
        return ExitCode.FAILURE
    return None


__all__ = ["EXIT_CODES", "ConfigurationError", "ExitCode", "FloodguardError",
           "PermissionDenied", "RefusedError", "exit_code_of"]
