"""shmring: zero-copy SPSC/MPMC ring buffers in one /dev/shm segment.

    with shmring.create("jobs", capacity=1024, slot_size=256, unlink_on_close=True) as seg:
        tx, rx = seg.producer(), seg.consumer()   # usually in two processes
        tx.push(b"hello")
        assert rx.pop(timeout=1.0) == b"hello"

    frames = shmring.create("cam", capacity=8, dtype="uint8", shape=(480, 640, 3))
    with frames.producer().claim(timeout=1.0) as slot:
        slot.array[:] = image                 # written in place

    fast = shmring.create("ctl", capacity=64, slot_size=56, slot_format="low_latency")
    fast.producer().push(b"go")               # copy calls only (no claim/peek)

See the README's Python section for zero-copy claims, peeks and GPU views,
and its "Low-latency slots" section for slot_format="low_latency".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

from . import _shmring
from ._errors import (
    ClosedError,
    EndOfStream,
    Error,
    ExistsError,
    InvalidArgumentError,
    NotFoundError,
    PeerDeadError,
    PermissionDeniedError,
    SizeNotSetError,
    UnsupportedError,
    WrongProcessError,
)
from ._lifetimes import DEFAULT_MODE as _DEFAULT_MODE
from ._lifetimes import RoleRef
from ._shmring import (
    BroadcastProducer,
    BroadcastSubscriber,
    GpuView,
    MessageIter,
    MpmcConsumer,
    MpmcProducer,
    Segment,
    Slot,
    SpscConsumer,
    SpscProducer,
    WaitPolicy,
    built_with_cuda,
    gpu_count,
    unlink,
)
from . import _lifetimes
from . import _asyncio

# pop_async / peek_async / push_async / async for (shmring/_asyncio.py).
_asyncio.install((SpscConsumer, MpmcConsumer, BroadcastSubscriber),
                 (SpscProducer, MpmcProducer, BroadcastProducer))

if TYPE_CHECKING:
    from .typed import (
        Record,
        TypedConsumer,
        TypedMpmcConsumer,
        TypedMpmcProducer,
        TypedProducer,
        TypedSegment,
        TypedSubscriber,
    )

from ._version import __version__  # written by the build from CMakeLists.txt


def _record(dtype: Any, shape: Any) -> Record | None:
    if dtype is None:
        if shape is not None:
            raise InvalidArgumentError("shape= needs a dtype=")
        return None
    from .typed import Record

    return Record(dtype, () if shape is None else shape)


def _typed(segment: Segment, record: Record | None) -> Segment | TypedSegment:
    """The segment, typed by the record the opener gave or, failing that, the
    one its creator stored; a record given that differs from the stored one
    is refused, naming both."""
    stored = None
    if segment.metadata.startswith(b'{"shmring.record":'):
        from .typed import Record

        stored = Record.from_metadata(segment.metadata)
    if record is None:
        record = stored
    elif stored is not None and (stored.dtype, stored.shape) != (record.dtype, record.shape):
        raise InvalidArgumentError(
            f"segment '{segment.name}' holds records of {stored.describe()} (stored by its "
            f"creator), not {record.describe()}", errc="invalid_argument")
    if record is None:
        return segment
    from .typed import TypedSegment

    return TypedSegment(segment, record)


@overload
def create(name: str, kind: str = ..., capacity: int = ..., slot_size: int | None = ...,
           mode: int = ..., *, slot_format: str = ..., dtype: None = ..., shape: None = ...,
           exist_ok: bool = ..., unlink_on_close: bool = ..., subscribers: int | None = ...,
           delivery: str | None = ..., lanes: int = ...) -> Segment: ...
@overload
def create(name: str, kind: str = ..., capacity: int = ..., slot_size: int | None = ...,
           mode: int = ..., *, slot_format: str = ..., dtype: Any, shape: Any = ...,
           exist_ok: bool = ..., unlink_on_close: bool = ..., subscribers: int | None = ...,
           delivery: str | None = ..., lanes: int = ...) -> TypedSegment: ...


def create(name: str, kind: str = "spsc", capacity: int = 1024, slot_size: int | None = None,
           mode: int = _DEFAULT_MODE, *, slot_format: str = "plain", dtype: Any = None,
           shape: Any = None, exist_ok: bool = False, unlink_on_close: bool = False,
           subscribers: int | None = None,
           delivery: str | None = None, lanes: int = 0) -> Segment | TypedSegment:
    """Creates a segment holding one ring of ``capacity`` slots (a power of two).

    The segment is a context manager: leaving ``with shmring.create(...) as
    seg:`` closes it, as ``seg.close()`` does. With ``unlink_on_close`` the
    name is removed then too (or when the Segment is collected), in this
    process only (a forked child's copy never unlinks); ``seg.unlink()`` and
    ``shmring.unlink(name)`` remove it at any time. With ``exist_ok`` an
    existing segment of that name is opened instead, if it holds a ring of
    the same kind, capacity, slot size and slot format (else shmring.Error,
    errc ``kind_mismatch`` or ``geometry_mismatch``, naming each difference);
    ``seg.created`` tells which happened.

    Untyped rings carry bytes of up to ``slot_size`` (default 1024). With
    ``dtype`` (and ``shape``, default a scalar) every slot holds one record of
    that numpy dtype and shape, ``slot_size`` defaults to its size, and a
    TypedSegment is returned.

    ``slot_format`` says how a slot holds its message (``Segment.slot_format``
    tells an opener):

    * ``"plain"`` (default): the message's bytes as they are, so claims and
      peeks lend them in place (zero-copy, numpy and GPU views).
    * ``"low_latency"``: the message as 8-byte words, each holding 4 of its
      bytes and a flag that says the word is current, so a reader (a GPU
      kernel across PCIe above all) sees a whole message in one round of
      loads. SPSC only, ``slot_size`` at most 4096, and copy calls only:
      push/try_push, pop/try_pop/pop_into/iter work, while claim/try_claim
      and peek/try_peek raise UnsupportedError. Half of each slot's memory is
      flags, and every word of the slot is written for each message.

    ``kind="broadcast"``: one producer (``seg.producer()``) and up to
    ``subscribers`` subscribers (``seg.subscriber(at=...)``), each of which
    reads every message. ``delivery="reliable"`` (default) makes the
    producer wait for the slowest live subscriber; ``"lossy"`` never makes
    it wait, and a subscriber it laps skips ahead to the newest message
    (``sub.lapped`` and ``sub.lost`` count what it missed). See
    docs/broadcast.md.

    ``kind="mpmc"``: by default any number of producers share one lane. With
    ``lanes`` (1 to 16, a power of two, at most ``capacity``) the segment
    holds that many lanes of ``capacity / lanes`` slots, each owned by one
    producer (one producer more is refused), and consumers read every lane:
    producers on different lanes never contend, and each producer's messages
    stay in its order, with no order between lanes. ``seg.lanes`` tells an
    opener.

    A bad argument raises InvalidArgumentError naming it: a bad format, or
    ``"low_latency"`` with ``kind="mpmc"``, with errc
    ``invalid_slot_format``; a low-latency ``slot_size`` above 4096 with errc
    ``invalid_slot_size``.
    """
    _lifetimes.check_name(name)
    record = _record(dtype, shape)  # checked before anything is created
    if record is not None:
        if slot_size is None:
            slot_size = record.nbytes
        elif _lifetimes._int("slot_size", slot_size) < record.nbytes:
            raise InvalidArgumentError(
                f"slot_size {slot_size} is smaller than one {record.describe()} record "
                f"({record.nbytes} bytes)", errc="invalid_slot_size")
    elif slot_size is None:
        slot_size = 1024
    capacity, slot_size, mode = _lifetimes.check_create_args(kind, capacity, slot_size, mode,
                                                             slot_format)
    subscribers, delivery = _lifetimes.check_broadcast_args(kind, subscribers, delivery)
    lanes = _lifetimes._int("lanes", lanes)
    try:
        seg = _shmring.create(name, kind, capacity, slot_size, mode, slot_format, unlink_on_close,
                              b"" if record is None else record.to_metadata(), subscribers,
                              delivery, lanes)
    except ExistsError:
        if not exist_ok:
            raise
        seg = _lifetimes.open_checked(name, kind, capacity, slot_size, slot_format)
        if kind == "broadcast":
            _lifetimes.check_broadcast_geometry(seg, subscribers, delivery)
        _lifetimes.check_lanes(seg, lanes)
        seg.unlink_on_close = unlink_on_close
    return _typed(seg, record)


@overload
def open(name: str, kind: str | None = ..., *, dtype: None = ..., shape: None = ...,
         allow_foreign_owner: bool = ..., init_timeout: float = ...) -> Segment: ...
@overload
def open(name: str, kind: str | None = ..., *, dtype: Any, shape: Any = ...,
         allow_foreign_owner: bool = ..., init_timeout: float = ...) -> TypedSegment: ...


def open(name: str, kind: str | None = None, *, dtype: Any = None,  # noqa: A001
         shape: Any = None, allow_foreign_owner: bool = False,
         init_timeout: float = 1.0) -> Segment | TypedSegment:
    """Opens an existing segment (of the given kind, if one is given); with
    ``dtype`` and ``shape``, as a TypedSegment of those records. The slot
    format is the creator's: see ``Segment.slot_format``. A segment owned by
    another user is refused (PermissionError) unless ``allow_foreign_owner``:
    whoever owns it could have planted it under a name this process trusts.
    ``init_timeout`` (seconds) bounds the wait for a creator that has not
    finished initialising it."""
    _lifetimes.check_name(name)
    _lifetimes.check_kind(kind, optional=True)
    init_timeout = _lifetimes.check_timeout("init_timeout", init_timeout)
    record = _record(dtype, shape)
    return _typed(_shmring.open(name, kind, bool(allow_foreign_owner), init_timeout), record)


def __getattr__(name: str) -> Any:
    # The typed-ring classes import numpy: only when asked for.
    if name in ("Record", "TypedSegment", "TypedProducer", "TypedConsumer", "TypedMpmcProducer",
                "TypedMpmcConsumer", "TypedSubscriber"):
        from . import typed

        return getattr(typed, name)
    raise AttributeError(f"module 'shmring' has no attribute {name!r}")


__all__ = [
    "BroadcastProducer",
    "BroadcastSubscriber",
    "ClosedError",
    "EndOfStream",
    "Error",
    "ExistsError",
    "GpuView",
    "InvalidArgumentError",
    "MessageIter",
    "MpmcConsumer",
    "MpmcProducer",
    "NotFoundError",
    "PeerDeadError",
    "PermissionDeniedError",
    "Record",
    "RoleRef",
    "Segment",
    "SizeNotSetError",
    "Slot",
    "SpscConsumer",
    "SpscProducer",
    "TypedConsumer",
    "TypedMpmcConsumer",
    "TypedMpmcProducer",
    "TypedProducer",
    "TypedSegment",
    "TypedSubscriber",
    "UnsupportedError",
    "WaitPolicy",
    "WrongProcessError",
    "built_with_cuda",
    "create",
    "gpu_count",
    "open",
    "unlink",
]
