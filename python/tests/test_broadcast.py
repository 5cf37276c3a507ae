"""Broadcast rings from Python: one producer, subscribers that each read every
message (reliable), or skip ahead when lapped (lossy); conflated reads."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import struct
import threading
import uuid

import pytest

import shmring


@pytest.fixture
def name():
    n = f"shmring-pytest-bc-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield n
    shmring.unlink(n, missing_ok=True)


def message(seq: int) -> bytes:
    """seq (8 bytes) + sha256 of a body derived from seq + the body."""
    body = bytes((seq * 13 + i) & 0xFF for i in range(seq % 50))
    return struct.pack("<Q", seq) + hashlib.sha256(body).digest() + body


def seq_of(msg: bytes) -> int:
    """The message's sequence number, after checking that it is whole."""
    assert msg[8:40] == hashlib.sha256(msg[40:]).digest(), "torn or corrupt message"
    return struct.unpack_from("<Q", msg)[0]


def test_create_and_properties(name):
    seg = shmring.create(name, kind="broadcast", subscribers=3, capacity=8, slot_size=128)
    assert (seg.kind, seg.subscribers, seg.delivery) == ("broadcast", 3, "reliable")
    other = shmring.open(name)
    assert (other.kind, other.subscribers, other.delivery) == ("broadcast", 3, "reliable")
    sub = seg.subscriber()
    assert (sub.role, sub.delivery, sub.position, sub.lapped, sub.lost) == (
        "subscriber", "reliable", 0, 0, 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="broadcast"), "needs subscribers=N"),
    (dict(kind="broadcast", subscribers=0), "between 1 and 64, not 0"),
    (dict(kind="broadcast", subscribers=65), "between 1 and 64, not 65"),
    (dict(kind="broadcast", subscribers=2, delivery="best"), "delivery must be"),
    (dict(kind="spsc", subscribers=2), "subscribers= is for kind='broadcast'"),
    (dict(kind="mpmc", delivery="lossy"), "delivery= is for kind='broadcast'"),
])
def test_bad_create_arguments_are_named(name, kwargs, match):
    with pytest.raises(shmring.InvalidArgumentError, match=match):
        shmring.create(name, capacity=8, slot_size=64, **kwargs)


def test_exist_ok_checks_subscribers_and_delivery(name):
    seg = shmring.create(name, kind="broadcast", subscribers=2, capacity=8, slot_size=64)
    same = shmring.create(name, kind="broadcast", subscribers=2, capacity=8, slot_size=64,
                          exist_ok=True)
    assert not same.created and same.subscribers == 2
    with pytest.raises(shmring.Error, match=r"subscribers=2 \(asked for 3\), "
                                            r"delivery='reliable' \(asked for 'lossy'\)") as e:
        shmring.create(name, kind="broadcast", subscribers=3, delivery="lossy", capacity=8,
                       slot_size=64, exist_ok=True)
    assert e.value.errc == "geometry_mismatch"
    seg.close()


def test_bad_join_point_and_consumer_are_refused(name):
    seg = shmring.create(name, kind="broadcast", subscribers=1, capacity=8, slot_size=64)
    with pytest.raises(shmring.InvalidArgumentError, match="'next', 'oldest' or 'newest'"):
        seg.subscriber(at="first")
    with pytest.raises(shmring.Error, match=r"subscriber\(at=") as e:
        seg.consumer()
    assert e.value.errc == "kind_mismatch"
    held = seg.subscriber()
    with pytest.raises(shmring.Error, match="all 1 subscriber blocks") as e:
        seg.subscriber()
    assert e.value.errc == "role_taken"
    held.close()
    seg.subscriber()  # its block is free again


def test_every_subscriber_thread_gets_every_message_in_order(name):
    total = 2000
    seg = shmring.create(name, kind="broadcast", subscribers=3, capacity=8, slot_size=128)
    subs = [seg.subscriber() for _ in range(3)]
    got = [[] for _ in subs]

    def read(i):
        sub = subs[i]
        while len(got[i]) < total:
            # The three ways of reading, in turn.
            k = len(got[i]) % 3
            if k == 0:
                got[i].append(seq_of(sub.pop(timeout=30)))
            elif k == 1:
                with sub.peek(timeout=30) as slot:
                    got[i].append(seq_of(bytes(slot)))
            else:
                got[i].append(seq_of(next(iter(sub))))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    with seg.producer() as p:
        for seq in range(total):
            p.push(message(seq), timeout=30)
    for t in threads:
        t.join(60)
    for g in got:
        assert g == list(range(total))


def _subscriber_process(name, total, ready, out):
    seg = shmring.open(name)
    sub = seg.subscriber()
    ready.set()
    # range first: zip stops before asking the iterator for one more.
    out.put([seq_of(m) for _, m in zip(range(total), sub.iter(timeout=30))])


def test_subscriber_processes_get_every_message(name):
    total = 500
    seg = shmring.create(name, kind="broadcast", subscribers=2, capacity=8, slot_size=128)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    readies = [ctx.Event() for _ in range(2)]
    procs = [ctx.Process(target=_subscriber_process, args=(name, total, r, out)) for r in readies]
    for p in procs:
        p.start()
    for r in readies:
        assert r.wait(30)  # joined at 'next': nothing may be published before
    p = seg.producer()
    for seq in range(total):
        p.push(message(seq), timeout=30)
    results = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert results == [list(range(total))] * 2


def test_join_points(name):
    seg = shmring.create(name, kind="broadcast", subscribers=4, capacity=8, slot_size=128)
    early = seg.subscriber()  # holds the backlog
    p = seg.producer()
    for seq in range(5):
        p.push(message(seq))
    assert seq_of(seg.subscriber(at="oldest").try_pop()) == 0
    assert seq_of(seg.subscriber(at="newest").try_pop()) == 4
    assert seg.subscriber(at="next").try_pop() is None
    assert len(early) == 5


def test_lossy_subscriber_skips_ahead_and_counts(name):
    seg = shmring.create(name, kind="broadcast", subscribers=1, delivery="lossy", capacity=8,
                         slot_size=128)
    sub = seg.subscriber()
    p = seg.producer()
    for seq in range(11):
        assert p.try_push(message(seq))  # never waits
    # pop reports no error: it goes on with the newest, and says what it missed.
    assert seq_of(sub.pop(timeout=5)) == 10
    assert (sub.lapped, sub.lost) == (1, 10)
    assert sub.try_pop() is None
    for seq in range(11, 30):
        p.push(message(seq))
    assert seq_of(bytes(sub.try_peek())) == 29
    assert (sub.lapped, sub.lost) == (2, 28)


def test_lossy_peek_says_when_the_slot_was_overwritten(name):
    seg = shmring.create(name, kind="broadcast", subscribers=1, delivery="lossy", capacity=4,
                         slot_size=128)
    sub = seg.subscriber()
    p = seg.producer()
    p.push(message(0))
    slot = sub.peek(timeout=5)
    assert slot.valid()
    data = bytes(slot)
    assert slot.valid() and seq_of(data) == 0
    for seq in range(1, 6):
        p.push(message(seq))
    assert not slot.valid()  # what was read now must be discarded
    slot.release()
    assert not slot.valid()


def test_lossy_readers_never_get_a_torn_message(name):
    total = 5000
    seg = shmring.create(name, kind="broadcast", subscribers=2, delivery="lossy", capacity=4,
                         slot_size=128)
    subs = [seg.subscriber(at="oldest") for _ in range(2)]
    got = [[] for _ in subs]

    def read(i):
        while not got[i] or got[i][-1] != total - 1:
            got[i].append(seq_of(subs[i].pop(timeout=30)))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    p = seg.producer()
    for seq in range(total):
        p.push(message(seq))
    for t in threads:
        t.join(60)
    for sub, g in zip(subs, got):
        assert g == sorted(set(g)) and g[-1] == total - 1
        assert len(g) + sub.lost <= total


def test_newest_is_a_conflated_read(name):
    seg = shmring.create(name, kind="broadcast", subscribers=1, capacity=4, slot_size=128)
    sub = seg.subscriber()
    p = seg.producer()
    assert sub.try_newest() is None
    with pytest.raises(TimeoutError):
        sub.newest(timeout=0.01)
    for seq in range(4):
        p.push(message(seq))
    assert not p.try_push(message(4))  # reliable: full until the subscriber reads
    assert seq_of(sub.newest()) == 3
    assert sub.lost == 0  # passed over on purpose: not lost
    assert p.try_push(message(4))  # the conflated read released the rest
    assert seq_of(sub.try_newest()) == 4
    assert sub.try_newest() is None


def test_detached_subscriber_no_longer_holds_the_producer(name):
    seg = shmring.create(name, kind="broadcast", subscribers=2, capacity=4, slot_size=128)
    reader = seg.subscriber()
    idle = seg.subscriber()
    p = seg.producer()
    for seq in range(4):
        p.push(message(seq))
    for _ in range(4):
        reader.pop()
    assert not p.try_push(message(4))
    idle.close()
    assert p.try_push(message(4))
    with pytest.raises(shmring.ClosedError):
        idle.pop()
    # A RoleRef attaches a subscriber in the block it left.
    again = seg.subscriber_ref().attach()
    assert again.role == "subscriber"


def test_end_of_stream_reaches_every_subscriber(name):
    seg = shmring.create(name, kind="broadcast", subscribers=2, capacity=8, slot_size=128)
    subs = [seg.subscriber(), seg.subscriber()]
    p = seg.producer()
    for seq in range(3):
        p.push(message(seq))
    p.end_stream()
    with pytest.raises(shmring.EndOfStream):
        p.push(message(3))
    for s in subs:
        assert [seq_of(m) for m in s] == [0, 1, 2]  # the for loop ends at the end
        with pytest.raises(shmring.EndOfStream):
            s.pop(timeout=60)  # at once
    p.close()
    # A new producer reopens the stream; its collection closes it again.
    p = seg.producer()
    p.push(message(7))
    del p
    assert [seq_of(m) for m in subs[0]] == [7]


def test_async_for_over_a_subscriber_ends_with_the_stream(name):
    import asyncio

    seg = shmring.create(name, kind="broadcast", subscribers=1, capacity=4, slot_size=128)
    sub = seg.subscriber()
    total = 50

    def produce():
        p = seg.producer()
        for seq in range(total):
            p.push(message(seq), timeout=30)
        p.close()  # ends the stream

    async def consume():
        seen = []
        async for m in sub:  # waits on the subscriber's descriptor
            seen.append(seq_of(bytes(m)))
        return seen

    t = threading.Thread(target=produce)
    t.start()
    seen = asyncio.run(asyncio.wait_for(consume(), 60))
    t.join()
    assert seen == list(range(total))


def test_a_subscriber_ref_to_a_full_ring_says_why(name):
    seg = shmring.create(name, kind="broadcast", subscribers=1, capacity=4, slot_size=64)
    held = seg.subscriber()
    with pytest.raises(shmring.Error, match="every subscriber block") as e:
        seg.subscriber_ref().attach()
    assert e.value.errc == "role_taken"
    held.close()
    assert seg.subscriber_ref().attach().role == "subscriber"
