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
from typing import Any, Iterator, TypeVar

import numpy as np

from ._errors import EndOfStream, Error
from ._lifetimes import RoleRef
from ._shmring import WaitPolicy

_H = TypeVar("_H", bound="_TypedHandle")

# DLPack type codes (kDLInt, kDLUInt, kDLFloat, kDLComplex, kDLBool) by numpy kind.
_DLPACK_CODES = {"i": 0, "u": 1, "f": 2, "c": 5, "b": 6}


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

    def __init__(self, dtype, shape=()):
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
            self.format = memoryview(np.empty(0, self.dtype)).format
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

    def apply(self, handle) -> None:
        handle._set_record(self.format, self.typestr, self.dtype.itemsize, list(self.shape),
                           self.dlpack_code)

    def check(self, data) -> np.ndarray:
        """``data`` as a C-contiguous array of this record, or ValueError."""
        a = data if isinstance(data, np.ndarray) else np.asarray(data)
        if a.dtype != self.dtype or a.shape != self.shape:
            raise ValueError(f"expected a {self.describe()} record, got {a.shape} {a.dtype}")
        return np.ascontiguousarray(a)


class TypedSegment:
    """A Segment whose slots hold one record each. Its other attributes
    (name, kind, capacity, slot_size, register_cuda, ...) are the segment's."""

    def __init__(self, segment: Any, record: Record) -> None:
        if record.nbytes > segment.slot_size:
            raise ValueError(f"a {record.describe()} record ({record.nbytes} bytes) does not fit "
                             f"the ring's {segment.slot_size}-byte slots")
        self.segment = segment
        self.record = record

    dtype = property(lambda self: self.record.dtype)
    shape = property(lambda self: self.record.shape)
    nbytes = property(lambda self: self.record.nbytes, doc="Bytes of one record.")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.segment, name)

    def producer(self) -> TypedProducer:
        return TypedProducer(self.segment.producer(), self.record)

    def consumer(self) -> TypedConsumer:
        return TypedConsumer(self.segment.consumer(), self.record)

    def subscriber(self, at: str = "next") -> TypedConsumer:
        """A subscriber of a broadcast ring, lending records (see Segment.subscriber)."""
        return TypedConsumer(self.segment.subscriber(at=at), self.record)

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
    """What typed producers and consumers share: the handle's own calls
    (through __getattr__) and its special methods, which Python looks up on
    the type."""

    handle: Any
    record: Record

    def __init__(self, handle: Any, record: Record) -> None:
        record.apply(handle)
        self.handle = handle
        self.record = record

    def __getattr__(self, name: str) -> Any:
        # claim/try_claim, peek/try_peek, close and the rest: the handle's
        # own (it lends slots with the record set by apply()).
        return getattr(self.handle, name)

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    @property
    def wait_policy(self) -> WaitPolicy:
        """How blocking calls wait (the handle's own; settable)."""
        policy: WaitPolicy = self.handle.wait_policy
        return policy

    @wait_policy.setter
    def wait_policy(self, policy: WaitPolicy) -> None:
        self.handle.wait_policy = policy

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


class TypedProducer(_TypedHandle):
    """Producer of records: push(array) copies one in, claim() lends a slot
    whose ``array`` is written in place."""

    def try_push(self, data: Any) -> bool:
        return self.handle.try_push(self.record.check(data))

    def push(self, data: Any, timeout: float | None = None) -> None:
        self.handle.push(self.record.check(data), timeout)


class TypedConsumer(_TypedHandle):
    """Consumer of records: pop() returns a new array, peek() lends the record
    in place (``slot.array``, read-only)."""

    def _checked(self, out: np.ndarray, size: int) -> np.ndarray:
        if size != self.record.nbytes:
            raise ValueError(f"message of {size} bytes is not one {self.record.describe()} record "
                             f"of {self.record.nbytes} bytes; it was consumed")
        return out

    def pop(self, timeout: float | None = None) -> np.ndarray:
        out = np.empty(self.record.shape, self.record.dtype)
        return self._checked(out, self.handle.pop_into(out, timeout))

    def try_pop(self) -> np.ndarray | None:
        out = np.empty(self.record.shape, self.record.dtype)
        size = self.handle.try_pop_into(out)
        return None if size is None else self._checked(out, size)

    def iter(self, timeout: float | None = None) -> Iterator[np.ndarray]:
        """Records (new arrays) until none arrives within timeout (None: no
        limit) or the stream ends (the producer closed the ring)."""
        while True:
            try:
                yield self.pop(timeout)
            except (TimeoutError, EndOfStream):
                return

    def __iter__(self) -> Iterator[np.ndarray]:
        """Records (new arrays) as they come, each waited for without limit."""
        return self.iter(None)
