"""What the services refuse, as one family of exceptions: the HTTP API maps each kind to one error in
OpenAI's shape (``gateway/api/service_error_handler.py``), the CLI prints the message and exits 1."""

from __future__ import annotations


class ServiceError(Exception):
    """A request a service cannot carry out; the message says why, for the caller to read.

    ``param`` names the input at fault where there is one; ``code`` is a machine-readable reason."""

    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code


class NotFound(ServiceError):
    """No such row (organisation, key, plan, worker), or not one the caller may see."""

    code = "not_found"


class Conflict(ServiceError):
    """A name that must be unique is taken, or the row is in a state that forbids the change."""

    code = "conflict"


class InvalidInput(ServiceError, ValueError):
    """Input the service does not accept (a limit out of range, an unknown field)."""


class NotConfigured(ServiceError):
    """The operation needs a setting that is not set."""

    code = "not_configured"
