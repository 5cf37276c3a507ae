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
    """A bad name, capacity, slot size or slot format (errc ``invalid_name``,
    ``invalid_capacity``, ``invalid_slot_size``, ``size_overflow`` or
    ``invalid_slot_format``: an unknown format, or low-latency slots asked of
    an MPMC ring)."""


class WrongProcessError(Error):
    """A handle used in a process other than the one that attached it (errc
    ``wrong_process``): a forked child's copy of its parent's handle. Nothing
    changed; attach a handle of the child's own."""


class UnsupportedError(Error):
    """The call does not apply to this ring (errc ``unsupported``): zero-copy
    claims and peeks on a ring of low-latency slots, whose bytes are not the
    message. The copy calls (push, pop, pop_into, iter) work there."""


_CLASSES = {
    "not_found": (NotFoundError, _errno.ENOENT),
    "already_exists": (ExistsError, _errno.EEXIST),
    "permission_denied": (PermissionDeniedError, _errno.EACCES),
    "invalid_name": (InvalidArgumentError, None),
    "invalid_capacity": (InvalidArgumentError, None),
    "invalid_slot_size": (InvalidArgumentError, None),
    "size_overflow": (InvalidArgumentError, None),
    "invalid_slot_format": (InvalidArgumentError, None),
    "invalid_argument": (InvalidArgumentError, None),
    "unsupported": (UnsupportedError, None),
    "wrong_process": (WrongProcessError, None),
}


for _cls in (Error, NotFoundError, ExistsError, PermissionDeniedError, InvalidArgumentError,
             WrongProcessError, UnsupportedError):
    _cls.__module__ = "shmring"


def _from_cpp(errc: str | None, errno: int | None, message: str) -> Error:
    cls, default_errno = _CLASSES.get(errc, (Error, None))
    return cls(message, errc=errc, errno=errno if errno is not None else default_errno)
