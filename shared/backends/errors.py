"""The errors a backend raises when it cannot run; each message is one line naming the fix."""

from __future__ import annotations


class BackendError(RuntimeError):
    """A backend cannot serve a stage as configured."""


class BackendUnavailable(BackendError):
    """The engine, its execution provider or the device is missing on this machine."""


class ExportMissing(BackendError):
    """No exported graph for a stage where the configuration points."""


class ExportStale(BackendError):
    """An exported graph exists but was made from other weights, for another stage or precision,
    or by an incompatible exporter; it must be exported again."""
