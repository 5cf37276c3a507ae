"""Typed rings: every slot holds one fixed-shape record, a numpy dtype and
shape (a video frame of shape (480, 640, 3) uint8, a structured sensor
sample, ...). Made by ``shmring.create(..., dtype=, shape=)``, which stores
the record (dtype and shape) in the segment's metadata, so that
``shmring.open(name)`` returns the typed ring without being told; an opener
that names a different dtype or shape is refused, naming both.

Claims and peeks lend the record in place: ``slot.array`` (or
``numpy.asarray(slot)``) is an array of that dtype and shape on the slot
itself, and ``slot.cuda()`` the same as a GPU view. ``push`` checks dtype and
shape; ``pop`` returns a new array.

On a ring of low-latency slots (``slot_format="low_latency"``) push and pop
work as here (they copy); claim and peek raise shmring.UnsupportedError, as
the bytes in such a slot are not the record.
"""

from __future__ import annotations

import json
import math
from contextlib import AbstractAsyncContextManager
from typing import (TYPE_CHECKING, Any, AsyncIterator, Coroutine, Iterator, Literal, TypeVar,
                    cast)

import numpy as np

from . import _asyncio
from ._errors import EndOfStream, Error
from ._lifetimes import RoleRef
from ._shmring import BroadcastSubscriber, MpmcConsumer, MpmcProducer, Segment, Slot, WaitPolicy

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray
    from typing_extensions import Buffer

    from ._shmring import _Consumer, _Handle, _Kind, _Producer, _Recovery, _SlotFormat

_H = TypeVar("_H", bound="_TypedHandle")

# DLPack type codes (kDLInt, kDLUInt, kDLFloat, kDLComplex, kDLBool) by numpy kind.
_DLPACK_CODES = {"i": 0, "u": 1, "f": 2, "c": 5, "b": 6}


def _buffer(a: NDArray[Any]) -> Buffer:
    # An ndarray is a buffer; numpy's stubs say so for Python 3.12 and later only.
    return cast("Buffer", a)


def _descr_from_json(d: Any) -> Any:
    # JSON has no tuples; numpy's descr needs (name, format[, shape]) tuples.
    if isinstance(d, str):
        return d
    fields = []
    for f in d:
        name = tuple(f[0]) if isinstance(f[0], list) else f[0]
        field = [name, _descr_from_json(f[1])]
        if len(f) > 2:
            field.append(tuple(f[2]))
        fields.append(tuple(field))
    return fields


class Record:
    """A dtype and a shape, checked once and described for the extension."""

    def __init__(self, dtype: DTypeLike, shape: Any = ()) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype.hasobject:
            raise ValueError(f"dtype {self.dtype} holds Python objects, which cannot live in shared memory")
        if self.dtype.subdtype is not None:
            raise ValueError(f"dtype {self.dtype} is a sub-array; give its shape in shape= instead")
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        try:
            self.shape = tuple(int(n) for n in shape)
        except TypeError:
            raise TypeError(f"shape must be an int or a tuple of ints, not {shape!r}") from None
        if any(n < 0 for n in self.shape):
            raise ValueError(f"shape {self.shape} has a negative dimension")
        self.nbytes = self.dtype.itemsize * math.prod(self.shape)
        if self.nbytes == 0:
            raise ValueError(f"a record of shape {self.shape} and dtype {self.dtype} holds no bytes")
        try:
            self.format = memoryview(_buffer(np.empty(0, self.dtype))).format
        except (ValueError, TypeError) as e:
            raise ValueError(f"dtype {self.dtype} has no buffer-protocol format: {e}") from None
        structured = self.dtype.fields is not None
        if structured and self.format[:1] not in "@=<>!^":
            # numpy describes packed structs in native mode ("T{L:a:...}"),
            # which readers would align (20 bytes read as 24); "^" is native
            # order without alignment, and explicit padding stays explicit.
            self.format = "^" + self.format
        self.typestr = "" if structured else self.dtype.str
        native = self.dtype.byteorder in ("=", "|")
        self.dlpack_code = -1 if structured or not native else _DLPACK_CODES.get(self.dtype.kind, -1)

    def describe(self) -> str:
        return f"{self.shape} {self.dtype}"

    # The record as the segment's metadata (Segment.metadata), so that an
    # opener finds dtype and shape without being told: JSON of numpy's own
    # description of the dtype (dtype_to_descr), which round-trips
    # structured, padded and byte-ordered dtypes.
    def to_metadata(self) -> bytes:
        descr = np.lib.format.dtype_to_descr(self.dtype)
        return json.dumps({"shmring.record": 1, "dtype": descr, "shape": list(self.shape)},
                          separators=(",", ":")).encode()

    @classmethod
    def from_metadata(cls, metadata: bytes) -> Record | None:
        """The record a creator stored, or None if the metadata holds none.
        Metadata that claims to be a record but is not one raises Error: the
        segment's bytes are not to be trusted."""
        if not metadata.startswith(b'{"shmring.record":'):
            return None
        try:
            d = json.loads(metadata)
            dtype = np.lib.format.descr_to_dtype(_descr_from_json(d["dtype"]))
            return cls(dtype, tuple(d["shape"]))
        except Exception as e:  # anything a scribbled segment could hold
            raise Error(f"the segment's record metadata is not valid: {e}",
                        errc="corrupt_header") from None

    def __repr__(self) -> str:
        return f"Record(dtype={self.dtype}, shape={self.shape})"

    def ref(self, ref: RoleRef) -> RoleRef:
        """``ref`` with this record, so that it attaches typed handles."""
        ref.dtype, ref.shape = self.dtype, self.shape
        return ref

    def apply(self, handle: _Handle) -> None:
        handle._set_record(self.format, self.typestr, self.dtype.itemsize, list(self.shape),
                           self.dlpack_code)

    def check(self, data: ArrayLike) -> NDArray[Any]:
        """``data`` as a C-contiguous array of this record, or ValueError."""
        a = data if isinstance(data, np.ndarray) else np.asarray(data)
        if a.dtype != self.dtype or a.shape != self.shape:
            raise ValueError(f"expected a {self.describe()} record, got {a.shape} {a.dtype}")
        return np.ascontiguousarray(a)


class TypedSegment:
    """A Segment whose slots hold one record each. Its other attributes
    (name, kind, capacity, slot_size, register_cuda, ...) are the segment's."""

    segment: Segment

    def __init__(self, segment: Segment, record: Record) -> None:
        if record.nbytes > segment.slot_size:
            raise ValueError(f"a {record.describe()} record ({record.nbytes} bytes) does not fit "
                             f"the ring's {segment.slot_size}-byte slots")
        self.segment = segment
        self.record = record

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.record.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.record.shape

    @property
    def nbytes(self) -> int:
        """Bytes of one record."""
        return self.record.nbytes

    # The segment's own, forwarded (typed, so that type checkers see them).
    @property
    def name(self) -> str:
        return self.segment.name

    @property
    def kind(self) -> _Kind:
        return self.segment.kind

    @property
    def slot_format(self) -> _SlotFormat:
        return self.segment.slot_format

    @property
    def capacity(self) -> int:
        return self.segment.capacity

    @property
    def slot_size(self) -> int:
        return self.segment.slot_size

    @property
    def size(self) -> int:
        return self.segment.size

    @property
    def metadata(self) -> bytes:
        return self.segment.metadata

    @property
    def created(self) -> bool:
        return self.segment.created

    @property
    def mode(self) -> int:
        return self.segment.mode

    @property
    def closed(self) -> bool:
        return self.segment.closed

    @property
    def cuda_device(self) -> int | None:
        return self.segment.cuda_device

    @property
    def subscribers(self) -> int:
        return self.segment.subscribers

    @property
    def delivery(self) -> Literal["reliable", "lossy"] | None:
        return self.segment.delivery

    @property
    def unlink_on_close(self) -> bool:
        return self.segment.unlink_on_close

    @unlink_on_close.setter
    def unlink_on_close(self, value: bool) -> None:
        self.segment.unlink_on_close = value

    def close(self) -> None:
        self.segment.close()

    def unlink(self, missing_ok: bool = False) -> None:
        self.segment.unlink(missing_ok)

    def register_cuda(self, device: int = 0) -> None:
        self.segment.register_cuda(device)

    def subscriber_ref(self) -> RoleRef:
        """A RoleRef to a subscriber, with this record (see Segment.subscriber_ref)."""
        return self.record.ref(self.segment.subscriber_ref())

    def producer(self) -> TypedProducer:
        """A producer of records (a TypedMpmcProducer on an MPMC ring)."""
        return _typed_producer(self.segment.producer(), self.record)

    def consumer(self) -> TypedConsumer:
        """A consumer of records (a TypedMpmcConsumer on an MPMC ring)."""
        return _typed_consumer(self.segment.consumer(), self.record)

    def subscriber(self, at: Literal["next", "oldest", "newest"] = "next") -> TypedSubscriber:
        """A subscriber of a broadcast ring, lending records (see Segment.subscriber)."""
        return TypedSubscriber(self.segment.subscriber(at=at), self.record)

    def producer_ref(self) -> RoleRef:
        """A RoleRef to the producer role, with this record (see Segment.producer_ref)."""
        return self.record.ref(self.segment.producer_ref())

    def consumer_ref(self) -> RoleRef:
        """A RoleRef to the consumer role, with this record (see Segment.consumer_ref)."""
        return self.record.ref(self.segment.consumer_ref())

    # Special methods are looked up on the type, not through __getattr__.
    def __enter__(self) -> TypedSegment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.segment.close()

    def __reduce__(self) -> tuple[Any, ...]:
        from ._lifetimes import _reopen_segment

        seg = self.segment
        return (_reopen_segment, (seg.name, seg.kind, seg.capacity, seg.slot_size,
                                  seg.slot_format, *seg._open_options, self.record.dtype,
                                  self.record.shape))

    def __repr__(self) -> str:
        if self.segment.closed:
            return f"<shmring.TypedSegment '{self.name}' closed>"
        return (f"<shmring.TypedSegment '{self.name}' {self.kind} capacity={self.capacity} "
                f"record={self.record.describe()} mode={self.mode:#o}>")


class _TypedHandle:
    """What typed producers and consumers share. Each call is written out,
    typed, and forwards to the untyped handle (which lends slots with the
    record set by apply()), so that type checkers see what comes back."""

    handle: _Handle
    record: Record

    def __init__(self, handle: _Handle, record: Record) -> None:
        record.apply(handle)
        self.handle = handle
        self.record = record

    @property
    def name(self) -> str:
        """The segment's name."""
        return self.handle.name

    @property
    def kind(self) -> _Kind:
        return self.handle.kind

    @property
    def role(self) -> Literal["producer", "consumer", "subscriber"]:
        return self.handle.role

    @property
    def capacity(self) -> int:
        return self.handle.capacity

    @property
    def slot_size(self) -> int:
        return self.handle.slot_size

    @property
    def slot_format(self) -> _SlotFormat:
        return self.handle.slot_format

    @property
    def closed(self) -> bool:
        return self.handle.closed

    @property
    def position(self) -> int:
        return self.handle.position

    @property
    def wait_policy(self) -> WaitPolicy:
        """How blocking calls wait (the handle's own; settable)."""
        return self.handle.wait_policy

    @wait_policy.setter
    def wait_policy(self, policy: WaitPolicy) -> None:
        self.handle.wait_policy = policy

    def close(self) -> None:
        """Closes the handle (see the untyped handles' close())."""
        self.handle.close()

    def event_fd(self) -> int:
        """The handle's event descriptor (docs/events.md)."""
        return self.handle.event_fd()

    def empty(self) -> bool:
        return self.handle.empty()

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def __len__(self) -> int:
        return len(self.handle)

    def __bool__(self) -> bool:
        return True

    def ref(self) -> RoleRef:
        """A RoleRef to this role, with this record (see the handles' ref())."""
        return self.record.ref(self.handle.ref())

    def __reduce__(self) -> tuple[Any, ...]:
        return self.ref().__reduce__()

    def __repr__(self) -> str:
        r = repr(self.handle)
        return f"<shmring.Typed{r[len('<shmring.'):-1]} record={self.record.describe()}>"


class _TypedRecovery:
    """recover() and abandoned, of the MPMC handles."""

    handle: _Recovery

    def recover(self) -> int:
        """See MpmcProducer.recover / MpmcConsumer.recover."""
        return self.handle.recover()

    @property
    def abandoned(self) -> int:
        return self.handle.abandoned


class TypedProducer(_TypedHandle):
    """Producer of records: push(array) copies one in, claim() lends a slot
    whose ``array`` is written in place."""

    handle: _Producer

    def try_push(self, data: ArrayLike) -> bool:
        return self.handle.try_push(_buffer(self.record.check(data)))

    def push(self, data: ArrayLike, timeout: float | None = None) -> None:
        self.handle.push(_buffer(self.record.check(data)), timeout)

    def push_async(self, data: ArrayLike) -> Coroutine[Any, Any, None]:
        """Copies one record in (checked as push() checks it), waiting on the
        running loop for room (see the untyped push_async)."""
        return _asyncio.push_async(self.handle, self.record.check(data))

    def claim(self, timeout: float | None = None) -> Slot:
        """A slot lent in place; ``slot.array`` is its record, writable."""
        return self.handle.claim(timeout)

    def try_claim(self) -> Slot | None:
        return self.handle.try_claim()

    def end_stream(self) -> None:
        self.handle.end_stream()

    @property
    def close_on_exit(self) -> bool:
        """Whether close() ends the stream (settable; see the untyped handles)."""
        return self.handle.close_on_exit

    @close_on_exit.setter
    def close_on_exit(self, on: bool) -> None:
        self.handle.close_on_exit = on


class TypedMpmcProducer(TypedProducer, _TypedRecovery):
    """Producer of records of an MPMC ring."""

    handle: MpmcProducer


class TypedConsumer(_TypedHandle):
    """Consumer of records: pop() returns a new array, peek() lends the record
    in place (``slot.array``, read-only)."""

    handle: _Consumer

    def _check_size(self, size: int) -> None:
        if size != self.record.nbytes:
            raise ValueError(f"message of {size} bytes is not one {self.record.describe()} record "
                             f"of {self.record.nbytes} bytes; it was consumed")

    def pop(self, timeout: float | None = None) -> NDArray[Any]:
        out = np.empty(self.record.shape, self.record.dtype)
        self._check_size(self.handle.pop_into(_buffer(out), timeout))
        return out

    def try_pop(self) -> NDArray[Any] | None:
        out = np.empty(self.record.shape, self.record.dtype)
        size = self.handle.try_pop_into(_buffer(out))
        if size is None:
            return None
        self._check_size(size)
        return out

    def pop_into(self, buffer: Buffer, timeout: float | None = None) -> int:
        """The next message copied into ``buffer`` (see the untyped pop_into)."""
        return self.handle.pop_into(buffer, timeout)

    def try_pop_into(self, buffer: Buffer) -> int | None:
        return self.handle.try_pop_into(buffer)

    def peek(self, timeout: float | None = None) -> Slot:
        """The next record lent in place: ``slot.array``, read-only."""
        return self.handle.peek(timeout)

    def try_peek(self) -> Slot | None:
        return self.handle.try_peek()

    def iter(self, timeout: float | None = None) -> Iterator[NDArray[Any]]:
        """Records (new arrays) until none arrives within timeout (None: no
        limit) or the stream ends (the producer closed the ring)."""
        while True:
            try:
                yield self.pop(timeout)
            except (TimeoutError, EndOfStream):
                return

    def __iter__(self) -> Iterator[NDArray[Any]]:
        """Records (new arrays) as they come, each waited for without limit."""
        return self.iter(None)

    # asyncio: the untyped handles' machinery (shmring/_asyncio.py), driven
    # through this handle's try_pop and try_peek, so records come out.
    def pop_async(self) -> Coroutine[Any, Any, NDArray[Any]]:
        """The next record (a new array), waiting on the running loop; as the
        untyped pop_async (EndOfStream, cancellation leaves the ring as it was)."""
        return _asyncio.pop_async(self)

    def peek_async(self) -> AbstractAsyncContextManager[Slot]:
        """``async with rx.peek_async() as slot``: the next record lent in
        place (``slot.array``, read-only) until the block ends."""
        return _asyncio.peek_async(self)

    def __aiter__(self) -> AsyncIterator[NDArray[Any]]:
        """``async for rec in rx``: records (new arrays) until the end of the stream."""
        return _asyncio.aiter_messages(self)


class TypedMpmcConsumer(TypedConsumer, _TypedRecovery):
    """Consumer of records of an MPMC ring."""

    handle: MpmcConsumer

    @property
    def read_ahead(self) -> int:
        """See MpmcConsumer.read_ahead."""
        return self.handle.read_ahead

    @read_ahead.setter
    def read_ahead(self, n: int) -> None:
        self.handle.read_ahead = n


class TypedSubscriber(TypedConsumer):
    """Subscriber of a broadcast ring of records: a consumer that also reads
    the newest record and counts what a lossy ring made it miss."""

    handle: BroadcastSubscriber

    def _record_of(self, msg: bytes) -> NDArray[Any]:
        self._check_size(len(msg))
        return np.frombuffer(msg, self.record.dtype).reshape(self.record.shape).copy()

    def newest(self, timeout: float | None = None) -> NDArray[Any]:
        """The newest record published since the last one read (a new array),
        passing over the ones before it; TimeoutError if none comes in time."""
        return self._record_of(self.handle.newest(timeout))

    def try_newest(self) -> NDArray[Any] | None:
        msg = self.handle.try_newest()
        return None if msg is None else self._record_of(msg)

    @property
    def delivery(self) -> Literal["reliable", "lossy"]:
        return self.handle.delivery

    @property
    def lapped(self) -> int:
        return self.handle.lapped

    @property
    def lost(self) -> int:
        return self.handle.lost


def _typed_producer(handle: _Producer, record: Record) -> TypedProducer:
    if isinstance(handle, MpmcProducer):
        return TypedMpmcProducer(handle, record)
    return TypedProducer(handle, record)


def _typed_consumer(handle: _Consumer, record: Record) -> TypedConsumer:
    if isinstance(handle, MpmcConsumer):
        return TypedMpmcConsumer(handle, record)
    return TypedConsumer(handle, record)
