"""Exceptions raised by shmring: shmring.Error and its subclasses."""

from __future__ import annotations

import errno as _errno


class Error(Exception):
    """A shmring failure. ``errc`` names the shmring error code (e.g.
    ``"kind_mismatch"``), or is None for a failed system call, whose errno is
    in ``errno``. ``str(exc)`` is the library's message."""

    def __init__(self, message: str, errc: str | None = None, errno: int | None = None):
        super().__init__(message)
        self.errc = errc
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFoundError(Error, FileNotFoundError):
    """No segment of that name (errc ``not_found``)."""


class ExistsError(Error, FileExistsError):
    """create() found a segment of that name (errc ``already_exists``)."""


class PermissionDeniedError(Error, PermissionError):
    """errc ``permission_denied``."""


class InvalidArgumentError(Error, ValueError):
    """A bad name, capacity or slot size."""


_CLASSES = {
    "not_found": (NotFoundError, _errno.ENOENT),
    "already_exists": (ExistsError, _errno.EEXIST),
    "permission_denied": (PermissionDeniedError, _errno.EACCES),
    "invalid_name": (InvalidArgumentError, None),
    "invalid_capacity": (InvalidArgumentError, None),
    "invalid_slot_size": (InvalidArgumentError, None),
    "size_overflow": (InvalidArgumentError, None),
}


for _cls in (Error, NotFoundError, ExistsError, PermissionDeniedError, InvalidArgumentError):
    _cls.__module__ = "shmring"


def _from_cpp(errc: str | None, errno: int | None, message: str) -> Error:
    cls, default_errno = _CLASSES.get(errc, (Error, None))
    return cls(message, errc=errc, errno=errno if errno is not None else default_errno)
