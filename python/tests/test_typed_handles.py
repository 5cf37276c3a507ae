"""Typed handles' own calls (shmring/typed.py): each forwards to the untyped
handle and says what it returns, so mypy --strict sees records and slots,
not Any; asyncio on typed handles gives records (pop_async, peek_async,
push_async, async for), and a cancelled typed pop_async takes nothing."""

from __future__ import annotations

import asyncio
import os
import re
import threading

import pytest

import shmring
from test_asyncio import WATCHDOG, count, run
from test_docs import ROOT, mypy_strict, needs_mypy
from test_shmring import name  # noqa: F401  (fixture: a unique ring name, unlinked after)

np = pytest.importorskip("numpy")

SHAPE = (4, 3)


def record(seq: int) -> np.ndarray:
    """A record whose every element depends on seq and its position."""
    return (np.arange(12, dtype=np.int64).reshape(SHAPE) * 1000 + seq)


def seq_of(rec: np.ndarray) -> int:
    assert rec.shape == SHAPE and rec.dtype == np.int64
    seq = int(rec[0, 0])
    assert np.array_equal(rec, record(seq)), f"record {seq} is damaged"
    return seq


def produce(tx, total: int) -> threading.Thread:
    """A producer thread: records 0..total-1 (claims and pushes in turn),
    then the end of the stream."""

    def body():
        for seq in range(total):
            if seq % 2:
                tx.push(record(seq), timeout=WATCHDOG)
            else:
                with tx.claim(timeout=WATCHDOG) as slot:
                    slot.array[...] = record(seq)
        tx.end_stream()

    t = threading.Thread(target=body)
    t.start()
    return t


def typed(name, **kw):
    return shmring.create(name, dtype=np.int64, shape=SHAPE, unlink_on_close=True, **kw)


def test_typed_handles_forward_the_handles_state(name):
    seg = typed(name, capacity=4)
    tx, rx = seg.producer(), seg.consumer()
    assert type(tx) is shmring.TypedProducer and type(rx) is shmring.TypedConsumer
    for h in (tx, rx):
        u = h.handle
        assert (h.name, h.kind, h.capacity, h.slot_size, h.slot_format, h.position) == (
            name, "spsc", 4, 96, "plain", 0)
        assert (h.role, h.closed, h.event_fd()) == (u.role, False, u.event_fd())
    assert (tx.role, rx.role) == ("producer", "consumer")
    assert rx.empty() and len(rx) == 0
    tx.push(record(0))
    assert not rx.empty() and len(rx) == len(tx) == 1 and tx.position == 1
    # pop_into on a typed consumer copies the record into the caller's buffer.
    out = np.zeros(SHAPE, np.int64)
    assert rx.pop_into(out, timeout=1.0) == 96 and seq_of(out) == 0
    assert rx.try_pop_into(out) is None
    policy = shmring.WaitPolicy(spin_time=0)
    rx.wait_policy = policy
    assert rx.wait_policy == rx.handle.wait_policy == policy
    # Nothing falls through to the untyped handle unnamed: a misspelt call is
    # an AttributeError of the typed handle.
    with pytest.raises(AttributeError, match="'TypedProducer' object has no attribute 'clam'"):
        tx.clam()
    assert not hasattr(tx, "recover")  # MPMC only
    rx.close()
    assert rx.closed and rx.handle.closed
    with pytest.raises(shmring.ClosedError):
        rx.try_pop()


def test_typed_claims_and_peeks_are_slots(name):
    seg = typed(name, capacity=2)
    tx, rx = seg.producer(), seg.consumer()
    assert rx.try_peek() is None
    slot = tx.try_claim()
    assert isinstance(slot, shmring.Slot) and slot.size == 96
    with slot:
        slot.array[...] = record(1)
    with tx.claim(timeout=1.0) as slot:
        slot.array[...] = record(2)
    assert tx.try_claim() is None  # full
    msg = rx.try_peek()
    assert isinstance(msg, shmring.Slot)
    with msg:
        assert seq_of(msg.array) == 1 and not msg.array.flags.writeable
    with rx.peek(timeout=1.0) as msg:
        assert seq_of(msg.array) == 2


def test_typed_end_stream_and_close_on_exit(name):
    seg = typed(name, capacity=4)
    tx, rx = seg.producer(), seg.consumer()
    assert tx.close_on_exit
    tx.close_on_exit = False
    assert not tx.handle.close_on_exit
    tx.push(record(0))
    tx.close()
    assert seq_of(rx.pop(timeout=1.0)) == 0
    with pytest.raises(TimeoutError):  # the close did not end the stream
        rx.pop(timeout=0.001)
    again = seg.producer()
    again.push(record(1))
    again.end_stream()
    assert [seq_of(r) for r in rx] == [1]  # `for` ends at the end of the stream
    with pytest.raises(shmring.EndOfStream):
        rx.try_pop()


def test_typed_mpmc_handles_recover(name):
    seg = typed(name, kind="mpmc", capacity=4)
    tx, rx = seg.producer(), seg.consumer()
    assert isinstance(tx, shmring.TypedMpmcProducer) and isinstance(tx, shmring.TypedProducer)
    assert isinstance(rx, shmring.TypedMpmcConsumer) and isinstance(rx, shmring.TypedConsumer)
    assert (tx.recover(), tx.abandoned, rx.recover(), rx.abandoned) == (0, 0, 0, 0)
    tx.push(record(3))
    assert seq_of(rx.pop(timeout=1.0)) == 3
    # Read-ahead: one claim takes both records, handed out one a call.
    rx.read_ahead = 2
    assert rx.read_ahead == 2 == rx.handle.read_ahead
    tx.push(record(4))
    tx.push(record(5))
    assert seq_of(rx.pop(timeout=1.0)) == 4
    assert seq_of(rx.try_pop()) == 5
    # A RoleRef attaches the same typed class in the process that attaches it.
    assert type(tx.ref().attach()) is shmring.TypedMpmcProducer


def test_typed_subscriber_newest_and_laps(name):
    seg = typed(name, kind="broadcast", subscribers=3, delivery="lossy", capacity=4)
    lossy, conflated = seg.subscriber(), seg.subscriber()
    assert type(lossy) is shmring.TypedSubscriber and lossy.delivery == "lossy"
    tx = seg.producer()
    assert conflated.try_newest() is None
    with pytest.raises(TimeoutError):
        conflated.newest(timeout=0.01)
    for seq in range(11):
        assert tx.try_push(record(seq))  # lossy: never waits
    newest = conflated.newest(timeout=1.0)
    assert seq_of(newest) == 10 and newest.flags.writeable  # a new array, as pop() gives
    assert conflated.try_newest() is None and conflated.lost == 0  # passed over, not lost
    # Lapped: the next read goes on with the newest, and the counts say what was missed.
    assert seq_of(lossy.pop(timeout=1.0)) == 10
    assert (lossy.lapped, lossy.lost) == (1, 10) == (lossy.handle.lapped, lossy.handle.lost)
    tx.push(record(11))
    assert seq_of(lossy.try_newest()) == 11
    # A subscriber's RoleRef carries the record: it attaches a typed subscriber.
    attached = seg.subscriber_ref().attach()
    assert type(attached) is shmring.TypedSubscriber and attached.try_pop() is None


def test_typed_newest_refuses_a_foreign_message(name):
    raw = shmring.create(name, kind="broadcast", subscribers=1, capacity=4, slot_size=96,
                         unlink_on_close=True)
    sub = shmring.open(name, dtype=np.int64, shape=SHAPE).subscriber()
    raw.producer().push(b"x" * 10)
    with pytest.raises(ValueError, match="message of 10 bytes is not one .* record of 96 bytes"):
        sub.newest(timeout=1.0)


def test_typed_pop_async_every_record_and_the_end(name):
    total = count(1000)
    seg = typed(name, kind="mpmc", capacity=8)
    rx = seg.consumer()
    t = produce(seg.producer(), total)

    async def main():
        got = []
        while True:
            try:
                rec = await rx.pop_async()
            except shmring.EndOfStream:
                return got
            assert isinstance(rec, np.ndarray) and rec.flags.owndata  # a copy, as pop() gives
            got.append(seq_of(rec))

    assert run(main()) == list(range(total))
    t.join()


def test_typed_async_for_yields_records_until_the_end(name):
    total = count(500)
    seg = typed(name, capacity=4)
    rx = seg.consumer()
    t = produce(seg.producer(), total)

    async def main():
        return [seq_of(rec) async for rec in rx]

    assert run(main()) == list(range(total))
    t.join()


def test_typed_peek_async_lends_the_record_in_place(name):
    seg = typed(name, capacity=4)
    rx, tx = seg.consumer(), seg.producer()

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, tx.push, record(7))
        async with rx.peek_async() as slot:
            view = slot.array
            assert seq_of(view) == 7 and not view.flags.writeable
            with memoryview(slot) as mv:
                assert mv.shape == SHAPE  # the record's own format, on the slot itself
            del view
        assert rx.try_pop() is None  # released: consumed

    run(main())


def test_typed_push_async_checks_and_waits_for_room(name):
    total = count(500)
    seg = typed(name, capacity=2)
    rx, tx = seg.consumer(), seg.producer()
    got = []

    def consume():
        got.extend(seq_of(r) for r in rx)

    async def main():
        with pytest.raises(ValueError, match=r"expected a \(4, 3\) int64 record, got \(3, 4\)"):
            await tx.push_async(np.zeros((3, 4), np.int64))
        with pytest.raises(ValueError, match=r"got \(4, 3\) float64"):
            await tx.push_async(np.zeros(SHAPE))
        assert len(tx) == 0  # refused records pushed nothing
        t = threading.Thread(target=consume)
        t.start()
        full = 0
        for seq in range(total):
            if len(tx) == tx.capacity:
                full += 1
            # Not contiguous: checked and copied into the slot as push() does.
            await tx.push_async(np.asfortranarray(record(seq)))
        tx.end_stream()
        return t, full

    t, full = run(main())
    t.join(WATCHDOG)
    assert not t.is_alive()
    assert got == list(range(total))
    assert full > 0, "a ring of 2 never filled: push_async never waited"


def test_cancelled_typed_pop_async_leaves_the_ring_unchanged(name):
    seg = typed(name, capacity=4)
    rx, tx = seg.consumer(), seg.producer()

    async def main():
        pending = asyncio.ensure_future(rx.pop_async())
        await asyncio.sleep(0.01)  # it is waiting on the descriptor now
        assert not pending.done()
        # The typed handle and its untyped one share the descriptor: one waiter.
        with pytest.raises(RuntimeError, match="one task at a time"):
            await rx.handle.pop_async()
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        tx.push(record(1))
        tx.push(record(2))
        assert len(rx) == 2 and rx.position == 0  # the cancelled wait took nothing
        assert seq_of(await rx.pop_async()) == 1
        # A pop cancelled after the record came takes it or leaves it, never loses it.
        late = asyncio.ensure_future(rx.pop_async())
        late.cancel()
        try:
            rec = await late
        except asyncio.CancelledError:
            rec = await rx.pop_async()
        assert seq_of(rec) == 2 and len(rx) == 0

    run(main())


SNIPPET = '''\
from __future__ import annotations

import numpy as np

import shmring


async def typed_calls(seg: shmring.TypedSegment, bc: shmring.TypedSegment) -> None:
    reveal_type(seg.capacity)  # ^(builtins\\.)?int$
    reveal_type(seg.shape)  # ^tuple\\[(builtins\\.)?int, \\.\\.\\.\\]$
    reveal_type(seg.subscriber_ref())  # RoleRef$
    tx, rx = seg.producer(), seg.consumer()
    reveal_type(tx.claim(timeout=1.0))  # Slot$
    reveal_type(tx.try_claim())  # Slot \\| None$
    reveal_type(rx.peek(timeout=1.0))  # Slot$
    reveal_type(rx.try_peek())  # Slot \\| None$
    reveal_type(rx.pop(timeout=1.0))  # ^numpy.ndarray\\[.*\\]$
    reveal_type(rx.try_pop())  # ^numpy.ndarray\\[.*\\] \\| None$
    reveal_type(await rx.pop_async())  # ^numpy.ndarray\\[.*\\]$
    reveal_type(await tx.push_async(np.zeros((4, 3), np.int64)))  # ^None$
    async with rx.peek_async() as slot:
        reveal_type(slot)  # Slot$
    async for rec in rx:
        reveal_type(rec)  # ^numpy.ndarray\\[.*\\]$
    for rec in rx.iter(timeout=0.1):
        reveal_type(rec)  # ^numpy.ndarray\\[.*\\]$
    reveal_type(len(rx))  # ^(builtins\\.)?int$
    reveal_type(rx.empty())  # ^(builtins\\.)?bool$
    reveal_type(tx.close_on_exit)  # ^(builtins\\.)?bool$
    reveal_type(rx.wait_policy)  # WaitPolicy$
    reveal_type(rx.kind)  # Literal\\['spsc'.*'broadcast'\\]
    tx.end_stream()
    tx.close()
    if isinstance(tx, shmring.TypedMpmcProducer):
        reveal_type(tx.recover())  # ^(builtins\\.)?int$
    sub = bc.subscriber(at="newest")
    reveal_type(sub.newest(timeout=1.0))  # ^numpy.ndarray\\[.*\\]$
    reveal_type(sub.try_newest())  # ^numpy.ndarray\\[.*\\] \\| None$
    reveal_type(sub.lapped)  # ^(builtins\\.)?int$
    reveal_type(sub.lost)  # ^(builtins\\.)?int$
'''

MISUSE = '''\
from __future__ import annotations

import shmring


def misuse(seg: shmring.TypedSegment) -> None:
    tx, rx = seg.producer(), seg.consumer()
    msg: bytes = rx.pop()  # E: Incompatible types in assignment
    tx.clam()  # E: has no attribute "clam"
    seg.capcity  # E: has no attribute "capcity"
    tx.recover()  # E: has no attribute "recover"
    rx.push(b"x")  # E: has no attribute "push"
    size: str = rx.try_peek()  # E: Incompatible types in assignment
'''


@needs_mypy
def test_mypy_strict_sees_the_typed_handles_types(tmp_path):
    f = tmp_path / "typed_calls.py"
    f.write_text(SNIPPET)
    r = mypy_strict([str(f)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = SNIPPET.splitlines()
    revealed = dict(re.findall(r'typed_calls\.py:(\d+): note: Revealed type is "(.*)"', r.stdout))
    expected = {n + 1: line.split("# ")[-1] for n, line in enumerate(lines) if "reveal_type" in line}
    assert set(revealed) == {str(n) for n in expected}, r.stdout
    for n, pattern in expected.items():
        assert re.search(pattern, revealed[str(n)]), f"line {n}: {lines[n - 1]}\n{revealed[str(n)]}"


@needs_mypy
def test_mypy_strict_refuses_misuse_of_typed_handles(tmp_path):
    f = tmp_path / "misuse.py"
    f.write_text(MISUSE)
    r = mypy_strict([str(f)], tmp_path)
    errors = dict(re.findall(r"misuse\.py:(\d+): error: (.*)", r.stdout))
    for n, line in enumerate(MISUSE.splitlines(), 1):
        if "# E: " in line:
            assert line.split("# E: ")[1] in errors.get(str(n), ""), f"line {n}: {line}\n{r.stdout}"
    assert len(errors) == MISUSE.count("# E: "), r.stdout


@needs_mypy
def test_typed_handles_agree_with_the_extension_stubs(tmp_path):
    # The typed handles forward to the untyped ones: checked against the
    # extension's stubs (_shmring.pyi), a forwarded call whose arguments or
    # result differ from the untyped one's is an error here.
    package = os.path.join(ROOT, "python", "shmring")
    files = [os.path.join(package, f) for f in ("typed.py", "_asyncio.py")]
    r = mypy_strict(files, tmp_path, "--follow-imports=silent")
    assert r.returncode == 0, r.stdout + r.stderr
