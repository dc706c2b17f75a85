"""Exit statuses of master and workers; mirrored in systemd RestartPreventExitStatus=."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    #: unexpected failure
    FAILURE = 1
    #: a worker failed to boot
    BOOT_FAILED = 3
    #: workers died faster than the restart intensity allows
    RESTART_INTENSITY = 4
    #: sysexits EX_CONFIG: bad configuration; restarting will not help
    CONFIG = 78
