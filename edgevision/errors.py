"""The small exception hierarchy of edgevision and the exit codes it maps to.

Exit codes follow sysexits(3), which systemd's ``RestartPreventExitStatus=78`` relies on:

======  ===================================================================================
0       ok
1       unexpected error (a bug: a traceback is printed)
2       usage error (bad command-line flag, or an output path that cannot be written)
66      input missing or unreadable, a model mirror directory included (EX_NOINPUT)
69      unavailable (EX_UNAVAILABLE): a download could not reach any host (retry or use a mirror), or a system
        command ``service install`` / ``uninstall`` runs (systemctl, systemd-sysusers, useradd) failed or is missing
78      configuration or model error, or web.host/port cannot be bound (EX_CONFIG): not retried
======  ===================================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_NOINPUT = 66
EXIT_UNAVAILABLE = 69
EXIT_CONFIG = 78


class EdgeVisionError(Exception):
    """Base class of every error edgevision reports as one clear line."""

    exit_code = EXIT_UNEXPECTED


class UsageError(EdgeVisionError):
    """A command-line flag or argument is wrong, or an output path cannot be written."""

    exit_code = EXIT_USAGE


class InputError(EdgeVisionError):
    """An input (image, video, camera, stream) is missing, unreadable or corrupt."""

    exit_code = EXIT_NOINPUT


class ConfigError(EdgeVisionError):
    """The configuration is invalid. Messages read ``file:line key: message``."""

    exit_code = EXIT_CONFIG


class ModelError(EdgeVisionError):
    """A model is missing, fails verification, is not a TFLite file, or cannot run here."""

    exit_code = EXIT_CONFIG


class NetworkError(ModelError):
    """A model download could not reach any host (offline, DNS failure, refused, timed out)."""

    exit_code = EXIT_UNAVAILABLE


class BackendUnavailable(ModelError):
    """The requested interpreter runtime or delegate is not installed or cannot be loaded."""


class EdgeTPUUnavailable(BackendUnavailable):
    """An Edge TPU model was requested but no Edge TPU delegate could be loaded."""


class SystemCommandFailed(EdgeVisionError):
    """A system command run for the user (``systemctl``, ``systemd-sysusers``, ``useradd``) failed or is not
    installed: a tool edgevision needs did not do its part (its own output says why)."""

    exit_code = EXIT_UNAVAILABLE
