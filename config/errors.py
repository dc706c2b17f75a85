"""The one error type for bad configuration; the CLI turns it into exit status 78."""


class ConfigError(Exception):
    """Configuration is invalid; the message names each bad key and what is allowed."""

    #: sysexits.h EX_CONFIG, mirrored in systemd RestartPreventExitStatus=.
    exit_status = 78
