"""asyncio on the role handles (shmring/_asyncio.py) and end of stream:
every message through pop_async from two rings at once, cancellation leaves
the ring unchanged, ``async for`` and ``for`` end at close, push_async waits
for room, a dead producer raises PeerDeadError. Each test runs its own
event loop under a watchdog (asyncio.wait_for), so a lost wake-up fails
instead of hanging."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import shmring
from test_shmring import name  # noqa: F401  (fixture: a unique ring name, unlinked after)

WATCHDOG = 20.0  # seconds; far beyond any look (50 ms) on a loaded machine
SCALE = float(os.environ.get("SHMRING_STRESS_SCALE", "1"))


def count(n: int) -> int:
    return max(10, int(n * SCALE))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WATCHDOG))


def produce(tx, total: int, close: bool = True) -> threading.Thread:
    """A producer thread: `total` sequence-numbered messages with blocking
    pushes, then (if `close`) the end of the stream."""

    def body():
        for i in range(total):
            tx.push(struct.pack("<Q", i), timeout=WATCHDOG)
            if i % 7 == 0:
                os.sched_yield()
        if close:
            tx.end_stream()

    t = threading.Thread(target=body)
    t.start()
    return t


def test_pop_async_every_message_from_two_rings_at_once(name):
    total = count(2000)
    a = shmring.create(name, capacity=8, slot_size=16, unlink_on_close=True)
    b = shmring.create(name + "-b", kind="mpmc", capacity=8, slot_size=16, unlink_on_close=True)
    rx_a, rx_b = a.consumer(), b.consumer()
    threads = [produce(a.producer(), total), produce(b.producer(), total)]

    async def drain(rx):
        got = []
        while True:
            try:
                msg = await rx.pop_async()
            except shmring.EndOfStream:
                return got
            got.append(struct.unpack("<Q", msg)[0])

    async def main():
        return await asyncio.gather(drain(rx_a), drain(rx_b))

    got_a, got_b = run(main())
    for t in threads:
        t.join()
    assert got_a == list(range(total))
    assert got_b == list(range(total))
    b.close()


def test_cancelled_pop_async_leaves_the_ring_unchanged(name):
    seg = shmring.create(name, capacity=4, slot_size=16, unlink_on_close=True)
    rx, tx = seg.consumer(), seg.producer()

    async def main():
        pending = asyncio.ensure_future(rx.pop_async())
        await asyncio.sleep(0.01)  # it is waiting on the descriptor now
        assert not pending.done()
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        tx.push(b"first")
        tx.push(b"second")
        # The cancelled wait took nothing: the next pop gets the first message.
        assert await rx.pop_async() == b"first"
        # And a pending pop that is cancelled after the message came takes it
        # or leaves it, never loses it.
        late = asyncio.ensure_future(rx.pop_async())
        late.cancel()
        try:
            got = await late
        except asyncio.CancelledError:
            got = await rx.pop_async()
        assert got == b"second"

    run(main())


def test_a_second_task_on_one_handle_is_refused(name):
    seg = shmring.create(name, capacity=4, slot_size=16, unlink_on_close=True)
    rx = seg.consumer()

    async def main():
        first = asyncio.ensure_future(rx.pop_async())
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="one task at a time"):
            await rx.pop_async()
        first.cancel()

    run(main())


def test_async_for_and_for_end_at_close(name):
    total = count(500)
    seg = shmring.create(name, kind="mpmc", capacity=16, slot_size=16, unlink_on_close=True)
    rx = seg.consumer()
    t = produce(seg.producer(), total)

    async def main():
        return [struct.unpack("<Q", m)[0] async for m in rx]

    assert run(main()) == list(range(total))
    t.join()
    # The end is sticky, and the blocking forms report it at once.
    with pytest.raises(shmring.EndOfStream):
        rx.pop(timeout=WATCHDOG)
    with pytest.raises(shmring.EndOfStream):
        rx.try_pop()


def test_sync_for_ends_when_the_producer_closes(name):
    seg = shmring.create(name, capacity=16, slot_size=16, unlink_on_close=True)
    rx = seg.consumer()
    tx = seg.producer()
    for i in range(5):
        tx.push(struct.pack("<Q", i))
    tx.close()  # the producer's close ends the stream
    assert [struct.unpack("<Q", m)[0] for m in rx] == list(range(5))
    assert issubclass(shmring.EndOfStream, shmring.Error)


def test_close_on_exit_false_leaves_the_stream_open(name):
    seg = shmring.create(name, capacity=16, slot_size=16, unlink_on_close=True)
    rx = seg.consumer()
    tx = seg.producer()
    assert tx.close_on_exit
    tx.close_on_exit = False
    tx.push(b"x")
    tx.close()
    assert rx.pop(timeout=0) == b"x"
    with pytest.raises(TimeoutError):
        rx.pop(timeout=0.001)
    again = seg.producer()
    again.push(b"y")
    assert rx.pop(timeout=WATCHDOG) == b"y"
    again.end_stream()
    with pytest.raises(shmring.EndOfStream):
        again.push(b"z")
    with pytest.raises(shmring.EndOfStream):
        rx.try_pop()


def test_push_async_waits_for_room(name):
    total = count(1000)
    seg = shmring.create(name, capacity=2, slot_size=16, unlink_on_close=True)
    rx, tx = seg.consumer(), seg.producer()
    got = []

    def consume():
        for m in rx:
            got.append(struct.unpack("<Q", m)[0])

    t = threading.Thread(target=consume)
    t.start()

    async def main():
        full = 0
        for i in range(total):
            if len(tx) == tx.capacity:
                full += 1
            await tx.push_async(struct.pack("<Q", i))
        tx.end_stream()
        return full

    full = run(main())
    t.join(WATCHDOG)
    assert not t.is_alive()
    assert got == list(range(total))
    assert full > 0, "a ring of 2 never filled: push_async never waited"


def test_peek_async_lends_in_place_and_releases(name):
    seg = shmring.create(name, capacity=4, slot_size=16, unlink_on_close=True)
    rx, tx = seg.consumer(), seg.producer()

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, tx.push, b"lent")
        async with rx.peek_async() as slot:
            assert bytes(slot) == b"lent"
        assert rx.try_pop() is None  # released: consumed

    run(main())


def test_dead_producer_raises_peer_dead(name):
    seg = shmring.create(name, capacity=4, slot_size=16, unlink_on_close=True)
    rx = seg.consumer()
    pid = os.fork()
    if pid == 0:
        try:
            tx = shmring.open(name).producer()
            tx.push(b"last words")
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)

    async def main():
        assert await rx.pop_async() == b"last words"
        with pytest.raises(shmring.PeerDeadError):
            await rx.pop_async()

    run(main())


def test_asyncio_server_example_runs():
    example = Path(__file__).resolve().parents[2] / "examples" / "asyncio_server.py"
    done = subprocess.run([sys.executable, str(example), "--self-test"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "self-test passed" in done.stdout


def test_typed_for_ends_at_close(name):
    np = pytest.importorskip("numpy")
    seg = shmring.create(name, capacity=8, dtype="int32", shape=(2,), unlink_on_close=True)
    rx, tx = seg.consumer(), seg.producer()
    for i in range(3):
        tx.push(np.array([i, -i], dtype="int32"))
    tx.close()
    assert [int(a[0]) for a in rx] == [0, 1, 2]
