"""Exit statuses of master, workers and CLI; mirrored in systemd RestartPreventExitStatus=.

Numbers above 63 are sysexits.h's, so scripts and systemd can tell the cases apart.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    #: unexpected failure (a bug: rerun with --debug for the traceback)
    FAILURE = 1
    #: a worker failed to boot
    BOOT_FAILED = 3
    #: workers died faster than the restart intensity allows
    RESTART_INTENSITY = 4
    #: a rolling upgrade's replacement worker could not import the handler code of the
    #: shards it was to take over (the old worker keeps serving them)
    HANDLERS_BROKEN = 5
    #: sysexits EX_NOINPUT: a read-only command found no registry (and created none)
    NO_REGISTRY = 66
    #: sysexits EX_UNAVAILABLE: PostgreSQL, Redis or the Bot API cannot be reached
    UNAVAILABLE = 69
    #: sysexits EX_OSERR: the HTTP address is taken by another process
    ADDRESS_IN_USE = 71
    #: sysexits EX_TEMPFAIL: another master already runs for this registry and host id
    ALREADY_RUNNING = 75
    #: sysexits EX_CONFIG: bad configuration (or a role/database that does not exist)
    CONFIG = 78
