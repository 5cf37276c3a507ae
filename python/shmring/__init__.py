"""shmring: zero-copy SPSC/MPMC ring buffers in one /dev/shm segment.

    seg = shmring.create("jobs", kind="spsc", capacity=1024, slot_size=256)
    tx, rx = seg.producer(), seg.consumer()   # usually in two processes
    tx.push(b"hello")
    assert rx.pop(timeout=1.0) == b"hello"

See the README's Python section for zero-copy claims and peeks.
"""

from ._errors import Error, ExistsError, InvalidArgumentError, NotFoundError, PermissionDeniedError
from ._shmring import (
    MessageIter,
    MpmcConsumer,
    MpmcProducer,
    Segment,
    Slot,
    SpscConsumer,
    SpscProducer,
    create,
    open,
    unlink,
)

__version__ = "0.1.0"

__all__ = [
    "Error",
    "ExistsError",
    "InvalidArgumentError",
    "MessageIter",
    "MpmcConsumer",
    "MpmcProducer",
    "NotFoundError",
    "PermissionDeniedError",
    "Segment",
    "Slot",
    "SpscConsumer",
    "SpscProducer",
    "create",
    "open",
    "unlink",
]
