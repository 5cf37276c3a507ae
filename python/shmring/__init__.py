"""shmring: zero-copy SPSC/MPMC ring buffers in one /dev/shm segment.

    seg = shmring.create("jobs", kind="spsc", capacity=1024, slot_size=256)
    tx, rx = seg.producer(), seg.consumer()   # usually in two processes
    tx.push(b"hello")
    assert rx.pop(timeout=1.0) == b"hello"

    frames = shmring.create("cam", capacity=8, dtype="uint8", shape=(480, 640, 3))
    with frames.producer().claim(timeout=1.0) as slot:
        slot.array[:] = image                 # written in place

See the README's Python section for zero-copy claims, peeks and GPU views.
"""

from . import _shmring
from ._errors import Error, ExistsError, InvalidArgumentError, NotFoundError, PermissionDeniedError
from ._shmring import (
    GpuView,
    MessageIter,
    MpmcConsumer,
    MpmcProducer,
    Segment,
    Slot,
    SpscConsumer,
    SpscProducer,
    built_with_cuda,
    gpu_count,
    unlink,
)

__version__ = "0.1.0"


def _record(dtype, shape):
    if dtype is None:
        if shape is not None:
            raise ValueError("shape= needs a dtype=")
        return None
    from .typed import Record

    return Record(dtype, () if shape is None else shape)


def _typed(segment, record):
    if record is None:
        return segment
    from .typed import TypedSegment

    return TypedSegment(segment, record)


def create(name, kind="spsc", capacity=1024, slot_size=None, mode=0o600, *, dtype=None, shape=None):
    """Creates a segment holding one ring of ``capacity`` slots (a power of two).

    Untyped rings carry bytes of up to ``slot_size`` (default 1024). With
    ``dtype`` (and ``shape``, default a scalar) every slot holds one record of
    that numpy dtype and shape, ``slot_size`` defaults to its size, and a
    TypedSegment is returned.
    """
    record = _record(dtype, shape)  # checked before anything is created
    if record is not None:
        if slot_size is None:
            slot_size = record.nbytes
        elif slot_size < record.nbytes:
            raise ValueError(f"slot_size {slot_size} is smaller than one {record.describe()} "
                             f"record ({record.nbytes} bytes)")
    elif slot_size is None:
        slot_size = 1024
    return _typed(_shmring.create(name, kind, capacity, slot_size, mode), record)


def open(name, kind=None, *, dtype=None, shape=None):  # noqa: A001 (shmring.open)
    """Opens an existing segment (of the given kind, if one is given); with
    ``dtype`` and ``shape``, as a TypedSegment of those records."""
    record = _record(dtype, shape)
    return _typed(_shmring.open(name, kind), record)


def __getattr__(name):
    # The typed-ring classes import numpy: only when asked for.
    if name in ("Record", "TypedSegment", "TypedProducer", "TypedConsumer"):
        from . import typed

        return getattr(typed, name)
    raise AttributeError(f"module 'shmring' has no attribute {name!r}")


__all__ = [
    "Error",
    "ExistsError",
    "GpuView",
    "InvalidArgumentError",
    "MessageIter",
    "MpmcConsumer",
    "MpmcProducer",
    "NotFoundError",
    "PermissionDeniedError",
    "Record",
    "Segment",
    "Slot",
    "SpscConsumer",
    "SpscProducer",
    "TypedConsumer",
    "TypedProducer",
    "TypedSegment",
    "built_with_cuda",
    "create",
    "gpu_count",
    "open",
    "unlink",
]
