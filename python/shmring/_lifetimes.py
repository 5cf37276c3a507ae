"""Arguments, geometry checks and passing rings to other processes.

A Segment pickles as its name and geometry and reopens by name wherever it
is unpickled. A role handle cannot travel: its role is held by the process
that attached it (an SPSC ring has one producer and one consumer at a time,
and a forked child's copy of a handle raises WrongProcessError). So a handle
pickles as a RoleRef, which names the segment and the role and holds
nothing; the process that receives it attaches a handle of its own with
``ref.attach()``. The same RoleRef works whether multiprocessing forks,
spawns or uses a fork server, since the child always attaches explicitly.
"""

from __future__ import annotations

import operator
from typing import Any

from . import _shmring
from ._errors import Error, InvalidArgumentError

KINDS = ("spsc", "mpmc", "broadcast")
SLOT_FORMATS = ("plain", "low_latency")
ROLES = ("producer", "consumer", "subscriber")
DELIVERIES = ("reliable", "lossy")


class _Mode(int):
    """A permission mode that shows itself in octal (``help(create)`` shows
    ``mode=0o600``, not ``mode=384``)."""

    def __repr__(self) -> str:
        return oct(self)


DEFAULT_MODE = _Mode(0o600)


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None


def _invalid(message: str, errc: str = "invalid_argument") -> InvalidArgumentError:
    return InvalidArgumentError(message, errc=errc)


def check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    return name


def check_kind(kind: Any, *, optional: bool = False) -> str | None:
    if kind is None and optional:
        return None
    if kind not in KINDS:
        raise _invalid(f"kind must be 'spsc', 'mpmc' or 'broadcast', not {kind!r}")
    return kind


def check_broadcast_args(kind: str, subscribers: Any, delivery: Any) -> tuple[int, str]:
    """create()'s ``subscribers`` and ``delivery``: needed by a broadcast
    ring (delivery defaults to reliable), refused for the other kinds."""
    if kind != "broadcast":
        for name, value in (("subscribers", subscribers), ("delivery", delivery)):
            if value is not None:
                raise _invalid(f"{name}= is for kind='broadcast' rings, not {kind!r} ones")
        return 0, "reliable"
    if subscribers is None:
        raise _invalid("a broadcast ring needs subscribers=N: how many subscribers may be "
                       "attached at once (1 to 64)")
    subscribers = _int("subscribers", subscribers)
    if not 1 <= subscribers <= 64:
        raise _invalid(f"subscribers must be between 1 and 64, not {subscribers}")
    if delivery is None:
        delivery = "reliable"
    if delivery not in DELIVERIES:
        raise _invalid(f"delivery must be 'reliable' or 'lossy', not {delivery!r}")
    return subscribers, delivery


def check_create_args(kind: Any, capacity: Any, slot_size: Any, mode: Any,
                      slot_format: Any) -> tuple[int, int, int]:
    """Checks create()'s arguments here, so that a bad one is named in a
    shmring error rather than reaching the extension's argument matching."""
    check_kind(kind)
    capacity = _int("capacity", capacity)
    if capacity < 1 or capacity & (capacity - 1):
        raise _invalid(f"capacity must be a power of two >= 1, not {capacity}", "invalid_capacity")
    slot_size = _int("slot_size", slot_size)
    if slot_size < 1:
        raise _invalid(f"slot_size must be >= 1 byte, not {slot_size}", "invalid_slot_size")
    mode = _int("mode", mode)
    if not 0 <= mode <= 0o777:
        raise _invalid(f"mode must be permission bits between 0 and 0o777, not {mode:#o}"
                       if mode >= 0 else f"mode must be permission bits between 0 and 0o777, "
                       f"not {mode}")
    if slot_format not in SLOT_FORMATS:
        raise _invalid(f"slot_format must be 'plain' or 'low_latency', not {slot_format!r}",
                       "invalid_slot_format")
    return capacity, slot_size, mode


def check_timeout(name: str, value: Any) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}") from None
    if not t >= 0:
        raise _invalid(f"{name} must be >= 0 seconds, not {value!r}")
    return t


def check_geometry(seg: Any, kind: str | None, capacity: int, slot_size: int,
                   slot_format: str) -> None:
    """Raises shmring.Error (errc ``geometry_mismatch``, or ``kind_mismatch``)
    naming every difference between the ring found and the one asked for."""
    asked = {"kind": kind, "capacity": capacity, "slot_size": slot_size,
             "slot_format": slot_format}
    diffs = [f"{k}={getattr(seg, k)!r} (asked for {v!r})" for k, v in asked.items()
             if v is not None and getattr(seg, k) != v]
    if diffs:
        errc = "kind_mismatch" if kind is not None and seg.kind != kind else "geometry_mismatch"
        raise Error(f"segment '{seg.name}' exists with another ring: " + ", ".join(diffs),
                    errc=errc)


def open_checked(name: str, kind: str | None, capacity: int, slot_size: int, slot_format: str,
                 allow_foreign_owner: bool = False, init_timeout: float = 1.0) -> Any:
    """Opens a segment by name and checks that it holds the ring described."""
    seg = _shmring.open(name, None, allow_foreign_owner, init_timeout)
    try:
        check_geometry(seg, kind, capacity, slot_size, slot_format)
    except BaseException:
        seg.close()
        raise
    return seg


def check_broadcast_geometry(seg: Any, subscribers: int, delivery: str) -> None:
    """create(exist_ok=True) of a broadcast ring: the one found has as many
    subscriber blocks and the same delivery (else shmring.Error, errc
    ``geometry_mismatch``, naming each difference; the segment is closed)."""
    asked = {"subscribers": subscribers, "delivery": delivery}
    diffs = [f"{k}={getattr(seg, k)!r} (asked for {v!r})" for k, v in asked.items()
             if getattr(seg, k) != v]
    if diffs:
        name = seg.name
        seg.close()
        raise Error(f"segment '{name}' holds a different broadcast ring: " + ", ".join(diffs),
                    errc="geometry_mismatch")


def check_lanes(seg: Any, lanes: int) -> None:
    """create(exist_ok=True): the ring found has as many lanes (else
    shmring.Error, errc ``geometry_mismatch``; the segment is closed)."""
    have = seg.lanes
    if have != lanes:
        name = seg.name
        seg.close()
        raise Error(f"segment '{name}' holds a ring of {have} lanes (asked for {lanes})",
                    errc="geometry_mismatch")


def _reopen_segment(name: str, kind: str, capacity: int, slot_size: int, slot_format: str,
                    allow_foreign_owner: bool, init_timeout: float, dtype: Any = None,
                    shape: Any = None) -> Any:
    """Unpickles a Segment (or TypedSegment): opened by name; the geometry
    must be the pickled one, so a name reused for another ring is refused."""
    seg = open_checked(name, kind, capacity, slot_size, slot_format, allow_foreign_owner,
                       init_timeout)
    if dtype is None:
        return seg
    from .typed import Record, TypedSegment

    return TypedSegment(seg, Record(dtype, shape))


class RoleRef:
    """A reference to one role (producer or consumer) of a named ring: what
    a role handle pickles as, and what ``seg.producer_ref()``,
    ``seg.consumer_ref()`` and ``handle.ref()`` return. It holds no role and
    no mapping, so it can go to any process (pickled, or inherited by a
    forked child); there ``ref.attach()`` opens the segment by name, checks
    its geometry, and attaches a handle of that process's own.

    On an SPSC ring the role must be free by then: a handle of it still open
    in another process makes ``attach()`` raise shmring.Error (errc
    ``role_taken``), so close the sending process's handle first (or never
    attach one there). MPMC rings take any number of handles of each role.
    """

    __slots__ = ("segment", "role", "kind", "capacity", "slot_size", "slot_format", "dtype",
                 "shape", "allow_foreign_owner")

    def __init__(self, segment: str, role: str, kind: str, capacity: int, slot_size: int,
                 slot_format: str = "plain", dtype: Any = None, shape: Any = None,
                 allow_foreign_owner: bool = False) -> None:
        if role not in ROLES:
            raise _invalid(f"role must be 'producer', 'consumer' or 'subscriber', not {role!r}")
        self.segment = check_name(segment)
        self.role = role
        self.kind = check_kind(kind)
        self.capacity = capacity
        self.slot_size = slot_size
        self.slot_format = slot_format
        self.dtype = dtype
        self.shape = shape
        self.allow_foreign_owner = allow_foreign_owner

    def attach(self, init_timeout: float = 1.0) -> Any:
        """Opens the segment by name and attaches this role in this process:
        a handle (a context manager; close() gives the role back)."""
        seg = _reopen_segment(self.segment, self.kind, self.capacity, self.slot_size,
                              self.slot_format, self.allow_foreign_owner, init_timeout,
                              self.dtype, self.shape)
        # The handle keeps the mapping alive on its own; this process's
        # Segment object is not needed past the attach.
        try:
            if self.role == "subscriber":
                return seg.subscriber()
            return seg.producer() if self.role == "producer" else seg.consumer()
        except Error as e:
            if e.errc != "role_taken":
                raise
            if self.role == "subscriber":
                why = "every subscriber block of the broadcast ring is held: close a subscriber"
            elif self.kind == "mpmc":
                why = f"every {self.role} record of the MPMC ring is held: close a {self.role}"
            else:
                why = (f"the ring has one {self.role} at a time: close the handle that holds "
                       f"it")
            raise Error(f"{e}; {why} (the sending process's, before passing this reference) "
                        f"and attach again", errc=e.errc, errno=e.errno) from None
        finally:
            seg.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (RoleRef, (self.segment, self.role, self.kind, self.capacity, self.slot_size,
                          self.slot_format, self.dtype, self.shape, self.allow_foreign_owner))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RoleRef) and self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash((self.segment, self.role))

    def __repr__(self) -> str:
        record = "" if self.dtype is None else f" record={self.shape} {self.dtype}"
        return (f"<shmring.RoleRef {self.role} of '{self.segment}' {self.kind} "
                f"capacity={self.capacity} slot_size={self.slot_size}{record} (not attached)>")

    def __getattr__(self, name: str) -> Any:
        # A RoleRef unpickled where a handle was expected: say what to do.
        if name in _HANDLE_CALLS:
            raise AttributeError(
                f"a RoleRef holds no role, so it has no {name}(): attach a handle in this "
                f"process first (handle = ref.attach(), or with ref.attach() as handle:)")
        raise AttributeError(f"'RoleRef' object has no attribute {name!r}")


_HANDLE_CALLS = frozenset({
    "push", "try_push", "claim", "try_claim", "pop", "try_pop", "peek", "try_peek", "iter",
    "pop_into", "try_pop_into", "close", "empty", "recover"})

RoleRef.__module__ = "shmring"
