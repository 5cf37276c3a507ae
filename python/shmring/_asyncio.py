"""asyncio for the role handles: ``await rx.pop_async()``, ``async with
rx.peek_async() as slot``, ``await tx.push_async(data)`` and ``async for msg
in rx``, on the running loop.

Each wait is ``loop.add_reader`` on the handle's ``event_fd()``: no thread
per wait, and a wait is the loop's own select/epoll. The protocol is the
descriptor's (docs/events.md): a try_ call that finds nothing arms the
descriptor again, so a wait is "try; if nothing, wait until readable; try
again". A task cancelled while it waits has taken nothing: the ring is
unchanged and the next call gets the message.

Typed handles (shmring/typed.py) use the same functions: given a typed
consumer, they call its try_pop and try_peek, so records come out.

A handle serves one task at a time, as it serves one thread: a second task
that waits on the same handle while one waits raises RuntimeError rather
than take over the first one's wake-up.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Protocol, TypeVar

from ._errors import EndOfStream

if TYPE_CHECKING:
    from ._shmring import Slot

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class _Waitable(Protocol):
    def event_fd(self) -> int: ...


class _Pops(_Waitable, Protocol[_T_co]):
    """A consumer, untyped (bytes) or typed (arrays)."""

    def try_pop(self) -> _T_co | None: ...


class _Peeks(_Waitable, Protocol):
    def try_peek(self) -> Slot | None: ...

# Descriptors with a task waiting on them now: add_reader keeps one callback
# per descriptor, so a second waiter would silently replace the first.
_waiting: set[int] = set()


async def _readable(handle: _Waitable) -> None:
    """Waits until the handle's descriptor is readable (or was already)."""
    fd = handle.event_fd()
    if fd in _waiting:
        raise RuntimeError(
            f"another task is already waiting on this handle ({handle!r}): a handle serves one "
            "task at a time; give each task a handle of its own")
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    _waiting.add(fd)
    loop.add_reader(fd, on_readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
        _waiting.discard(fd)


async def pop_async(self: _Pops[_T]) -> _T:
    """The next message as bytes (a typed consumer's: a record), waiting on the running loop. EndOfStream
    once the producer closed the ring and every message was read;
    PeerDeadError if it died. Cancelling the wait leaves the ring as it was."""
    while True:
        msg = self.try_pop()
        if msg is not None:
            return msg
        await _readable(self)


async def push_async(self: Any, data: Any) -> None:
    """Copies one message into the ring, waiting on the running loop for room.
    PeerDeadError if the ring is full and its consumers died. Cancelling the
    wait leaves the ring as it was (nothing was pushed)."""
    while not self.try_push(data):
        await _readable(self)


class _PeekAsync:
    """``async with rx.peek_async() as slot``: the next message lent in place
    (a read-only Slot), released when the block ends."""

    def __init__(self, consumer: _Peeks) -> None:
        self._consumer = consumer
        self._slot: Slot | None = None

    async def __aenter__(self) -> Slot:
        while True:
            slot = self._consumer.try_peek()
            if slot is not None:
                self._slot = slot
                return slot.__enter__()
            await _readable(self._consumer)

    async def __aexit__(self, *exc: Any) -> bool:
        slot, self._slot = self._slot, None
        return bool(slot.__exit__(*exc)) if slot is not None else False


def peek_async(self: _Peeks) -> _PeekAsync:
    """An async context manager lending the next message in place: ``async
    with rx.peek_async() as slot``. The wait, as pop_async's."""
    return _PeekAsync(self)


async def _messages(consumer: _Pops[_T]) -> AsyncIterator[_T]:
    while True:
        try:
            msg = await pop_async(consumer)
        except EndOfStream:
            return
        yield msg


def aiter_messages(self: _Pops[_T]) -> AsyncIterator[_T]:
    """``async for msg in rx``: messages as they come, until the end of the
    stream (PeerDeadError if the producer died)."""
    return _messages(self)


def install(consumers: tuple[type, ...], producers: tuple[type, ...]) -> None:
    for cls in consumers:
        setattr(cls, "pop_async", pop_async)
        setattr(cls, "peek_async", peek_async)
        setattr(cls, "__aiter__", aiter_messages)
    for cls in producers:
        setattr(cls, "push_async", push_async)
