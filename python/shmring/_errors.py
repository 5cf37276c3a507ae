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

    def __reduce__(self):
        # The default pickles args only, losing errc and errno (an error
        # raised in a multiprocessing worker comes back through pickle).
        return (type(self), (str(self), self.errc, self.errno))


class NotFoundError(Error, FileNotFoundError):
    """No segment of that name (errc ``not_found``)."""


class ExistsError(Error, FileExistsError):
    """create() found a segment of that name (errc ``already_exists``)."""


class PermissionDeniedError(Error, PermissionError):
    """errc ``permission_denied``."""


class InvalidArgumentError(Error, ValueError):
    """A bad argument: name, kind, capacity, slot size, mode or slot format
    (errc ``invalid_name``, ``invalid_capacity``, ``invalid_slot_size``,
    ``size_overflow``, ``invalid_argument``, or ``invalid_slot_format``: an
    unknown format, or low-latency slots asked of an MPMC ring). The message
    names the argument."""


class WrongProcessError(Error):
    """A handle used in a process other than the one that attached it (errc
    ``wrong_process``): a forked child's copy of its parent's handle. Nothing
    changed; attach a handle of the child's own."""


class ClosedError(Error, ValueError):
    """A call on a Segment or role handle after its close() (errc ``closed``);
    like a closed file's, also a ValueError. The message names the segment
    and the role."""


class EndOfStream(Error):
    """The ring's producer closed it and every message published before was
    read (errc ``end_of_stream``): nothing more will come unless a producer
    attaches again. ``for`` and ``async for`` loops over a consumer end
    here; a producer gets it from pushes after its ``end_stream()``."""


class PeerDeadError(Error):
    """The other side of the ring died without closing it (errc
    ``peer_dead``): a consumer has read every message the dead producer
    published, or a producer's ring is full and its consumers died. Unlike
    EndOfStream, loops do not end quietly on it: a crash is an error. A peer
    that attaches again resumes the ring."""


class SizeNotSetError(Error):
    """A claimed slot was to be published without a size (errc
    ``size_not_set``): it was written through a view, and nothing said how
    many of its bytes are the message. Use ``slot.write(data)``, or set
    ``slot.size`` (or call ``commit(n)``) after writing through a view. Left
    by a ``with`` block, the claim is given back unpublished."""


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
    "closed": (ClosedError, None),
    "end_of_stream": (EndOfStream, None),
    "peer_dead": (PeerDeadError, None),
    "size_not_set": (SizeNotSetError, None),
}


for _cls in (Error, NotFoundError, ExistsError, PermissionDeniedError, InvalidArgumentError,
             WrongProcessError, UnsupportedError, ClosedError, SizeNotSetError, EndOfStream,
             PeerDeadError):
    _cls.__module__ = "shmring"


def _from_cpp(errc: str | None, errno: int | None, message: str) -> Error:
    cls, default_errno = _CLASSES.get(errc, (Error, None))
    return cls(message, errc=errc, errno=errno if errno is not None else default_errno)
