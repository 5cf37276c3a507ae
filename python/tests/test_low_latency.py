"""Rings of low-latency slots (slot_format="low_latency"): messages as flagged
8-byte words, SPSC only, copy calls only (README, "Low-latency slots")."""

from __future__ import annotations

import multiprocessing as mp
import os
import struct

import pytest

import shmring
from test_shmring import _demo, _run_cpp_consumer, _run_cpp_producer
from test_shmring import name  # noqa: F401  (fixture: a unique ring name, unlinked after)

try:
    import numpy as np
except ImportError:  # numpy is optional
    np = None

LL = "low_latency"


def payload(seq: int, size: int) -> bytes:
    """`size` bytes that differ with seq and with every offset."""
    return bytes((seq * 31 + i * 7 + (i >> 8)) & 0xFF for i in range(size))


# ---- creating and opening ---------------------------------------------------


def test_format_is_reported(name):
    seg = shmring.create(name, capacity=8, slot_size=60, slot_format=LL)
    assert seg.slot_format == LL
    assert (seg.kind, seg.capacity, seg.slot_size) == ("spsc", 8, 60)
    assert "slot_format=low_latency" in repr(seg)
    assert shmring.open(name).slot_format == LL
    assert seg.producer().slot_format == LL
    assert seg.consumer().slot_format == LL


def test_plain_is_the_default(name):
    seg = shmring.create(name, capacity=4, slot_size=16)
    assert seg.slot_format == "plain"
    assert "slot_format" not in repr(seg)
    assert seg.producer().slot_format == "plain"
    shmring.unlink(name)
    assert shmring.create(name, capacity=4, slot_size=16, slot_format="plain").slot_format == "plain"


def test_mpmc_is_refused(name):
    with pytest.raises(shmring.InvalidArgumentError) as e:
        shmring.create(name, kind="mpmc", capacity=8, slot_size=64, slot_format=LL)
    assert e.value.errc == "invalid_slot_format"
    assert isinstance(e.value, ValueError)
    assert "spsc" in str(e.value)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_unknown_format_is_refused(name):
    with pytest.raises(shmring.InvalidArgumentError) as e:
        shmring.create(name, capacity=8, slot_size=64, slot_format="fast")
    assert e.value.errc == "invalid_slot_format"
    assert "'plain' or 'low_latency'" in str(e.value)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_slot_size_limit(name):
    with pytest.raises(shmring.InvalidArgumentError) as e:
        shmring.create(name, capacity=4, slot_size=4097, slot_format=LL)
    assert e.value.errc == "invalid_slot_size"
    assert "4096" in str(e.value)
    seg = shmring.create(name, capacity=4, slot_size=4096, slot_format=LL)
    tx, rx = seg.producer(), seg.consumer()
    big = payload(7, 4096)
    tx.push(big, timeout=0)
    assert rx.pop(timeout=0) == big


# ---- copy in, copy out --------------------------------------------------------


@pytest.mark.parametrize("slot_size", [1, 4, 13, 56, 64, 100])
def test_every_length_round_trips(name, slot_size):
    seg = shmring.create(name, capacity=4, slot_size=slot_size, slot_format=LL)
    tx, rx = seg.producer(), seg.consumer()
    assert rx.try_pop() is None
    for size in range(slot_size + 1):
        msg = payload(size, size)
        assert tx.try_push(msg)
        assert rx.try_pop() == msg
    # And with the ring full between (every slot written, then read in order).
    for first in range(0, slot_size + 1, 4):
        sizes = [min(first + i, slot_size) for i in range(4)]
        for s in sizes:
            tx.push(payload(s + 1, s), timeout=0)
        assert not tx.try_push(b"")
        for s in sizes:
            assert rx.pop(timeout=0) == payload(s + 1, s)


def test_wrap_around_many_laps(name):
    # A long message followed by shorter ones in the same slot a lap later:
    # the flags, not stale words, decide what is current.
    capacity, slot_size = 4, 40
    seg = shmring.create(name, capacity=capacity, slot_size=slot_size, slot_format=LL)
    tx, rx = seg.producer(), seg.consumer()
    for seq in range(capacity * 50):
        size = (slot_size - seq) % (slot_size + 1)
        msg = payload(seq, size)
        if seq % 2:
            assert tx.try_push(msg)
        else:
            tx.push(bytearray(msg), timeout=1.0)
        got = rx.pop(timeout=1.0) if seq % 3 else rx.try_pop()
        assert got == msg, f"message {seq} of {size} bytes"
    assert rx.try_pop() is None


def test_batches_of_a_full_ring_wrap(name):
    seg = shmring.create(name, capacity=8, slot_size=24, slot_format=LL)
    tx, rx = seg.producer(), seg.consumer()
    seq = 0
    for _ in range(20):
        sent = []
        while tx.try_push(m := payload(seq, seq % 25)):
            sent.append(m)
            seq += 1
        assert len(sent) == 8
        assert list(rx.iter(timeout=0)) == sent


def test_pop_into(name):
    seg = shmring.create(name, capacity=4, slot_size=32, slot_format=LL)
    tx, rx = seg.producer(), seg.consumer()
    buf = bytearray(32)
    assert rx.try_pop_into(buf) is None
    tx.push(b"0123456789", timeout=0)
    assert rx.pop_into(buf, timeout=0) == 10
    assert bytes(buf[:10]) == b"0123456789"
    tx.push(payload(1, 32), timeout=0)
    small = bytearray(8)
    with pytest.raises(ValueError, match="message of 32 bytes does not fit the buffer of 8 bytes"):
        rx.try_pop_into(small)
    assert rx.try_pop() == payload(1, 32)  # kept for the next pop


def test_too_large_message(name):
    seg = shmring.create(name, capacity=4, slot_size=16, slot_format=LL)
    tx, rx = seg.producer(), seg.consumer()
    with pytest.raises(ValueError, match="message of 17 bytes does not fit the ring's 16-byte slots"):
        tx.push(b"x" * 17)
    with pytest.raises(ValueError):
        tx.try_push(b"x" * 17)
    assert rx.try_pop() is None  # nothing went in
    assert tx.try_push(b"x" * 16)
    assert rx.try_pop() == b"x" * 16


def test_timeouts(name):
    seg = shmring.create(name, capacity=1, slot_size=8, slot_format=LL)
    tx, rx = seg.producer(), seg.consumer()
    with pytest.raises(TimeoutError):
        rx.pop(timeout=0.05)
    tx.push(b"fills", timeout=0)
    with pytest.raises(TimeoutError):
        tx.push(b"no room", timeout=0.05)
    assert list(rx.iter(timeout=0.05)) == [b"fills"]


def test_a_new_producer_continues(name):
    seg = shmring.create(name, capacity=4, slot_size=16, slot_format=LL)
    rx = seg.consumer()
    tx = seg.producer()
    tx.push(b"first", timeout=0)
    del tx  # detaches; the next producer is a new incarnation
    tx = seg.producer()
    tx.push(b"second", timeout=0)
    assert list(rx.iter(timeout=0)) == [b"first", b"second"]


# ---- zero-copy calls are refused ----------------------------------------------


def test_zero_copy_is_refused(name):
    seg = shmring.create(name, capacity=4, slot_size=16, slot_format=LL)
    tx, rx = seg.producer(), seg.consumer()
    calls = [
        lambda: tx.claim(timeout=1.0),
        tx.try_claim,
        lambda: rx.peek(timeout=1.0),
        rx.try_peek,
    ]
    for call in calls:
        with pytest.raises(shmring.UnsupportedError) as e:
            call()
        assert e.value.errc == "unsupported"
        assert isinstance(e.value, shmring.Error)
        assert "zero-copy views" in str(e.value) and "low-latency slots" in str(e.value)
        assert "copy calls" in str(e.value)
    # As context managers too, with a message waiting (peek) and room (claim).
    tx.push(b"waiting", timeout=0)
    with pytest.raises(shmring.UnsupportedError, match="not available on low-latency slots"):
        with tx.claim(timeout=0) as slot:
            slot.write(b"never")
    with pytest.raises(shmring.UnsupportedError, match="not available on low-latency slots"):
        with rx.peek(timeout=0):
            pass
    # Nothing was lent or lost: the handles still work.
    assert rx.pop(timeout=0) == b"waiting"
    tx.push(b"after", timeout=0)
    assert rx.pop(timeout=0) == b"after"


# ---- typed rings: copy calls work, views are refused ------------------------------


@pytest.mark.skipif(np is None, reason="numpy not installed")
def test_typed_ring(name):
    seg = shmring.create(name, capacity=4, dtype="<f4", shape=(3, 5), slot_format=LL)
    assert seg.slot_format == LL and seg.slot_size == 60
    tx, rx = seg.producer(), seg.consumer()
    for i in range(10):
        a = np.arange(15, dtype="<f4").reshape(3, 5) * i
        tx.push(a, timeout=0)
        np.testing.assert_array_equal(rx.pop(timeout=0), a)
    with pytest.raises(shmring.UnsupportedError):
        tx.claim(timeout=0)
    with pytest.raises(shmring.UnsupportedError):
        rx.try_peek()


@pytest.mark.skipif(np is None, reason="numpy not installed")
def test_typed_record_too_large(name):
    with pytest.raises(shmring.InvalidArgumentError) as e:
        shmring.create(name, capacity=4, dtype="uint8", shape=(4097,), slot_format=LL)
    assert e.value.errc == "invalid_slot_size"


# ---- across processes -------------------------------------------------------


def _ll_producer(name: str, count: int, slot_size: int) -> None:
    tx = shmring.open(name).producer()
    for seq in range(count):
        size = 8 + seq % (slot_size - 7)
        body = payload(seq, size - 8)
        tx.push(struct.pack("<Q", seq) + body, timeout=30)


def test_across_processes(name):
    count, slot_size = 5000, 120
    seg = shmring.create(name, capacity=16, slot_size=slot_size, slot_format=LL)
    rx = seg.consumer()
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_ll_producer, args=(name, count, slot_size))
    proc.start()
    try:
        for seq in range(count):
            msg = rx.pop(timeout=30)
            assert struct.unpack_from("<Q", msg)[0] == seq, "lost or reordered message"
            assert len(msg) == 8 + seq % (slot_size - 7)
            assert msg[8:] == payload(seq, len(msg) - 8), f"torn message {seq}"
    finally:
        proc.join(timeout=30)
    assert proc.exitcode == 0
    with pytest.raises(shmring.EndOfStream):  # nothing more: the producer's exit closed it
        rx.try_pop()


# ---- across languages: shmring-demo --slot-format low_latency -----------------
#
# The C++ demo (examples/demo_pipeline.cpp) streams messages of [sequence
# number, checksum, body] through <name>-data; with --slot-format low_latency
# its rings are SPSC rings of low-latency slots, written and read with copy
# calls. test_shmring.py holds the helpers that run the demo and build and
# check those messages.


def _ll_demo() -> str:
    import subprocess

    demo = _demo()
    usage = subprocess.run([demo, "--help"], capture_output=True, text=True, timeout=30).stdout
    if "--slot-format" not in usage:
        pytest.skip(f"{demo} predates --slot-format; rebuild it")
    return demo


# 16 bytes of header, then bodies that exercise every branch of the checksum;
# 61 is not a multiple of 4 (a partly filled last word), 100 takes the reader
# past its first round of 18 words.
@pytest.mark.parametrize("size", [16, 61, 100])
def test_cpp_producer_python_consumer_low_latency(size):
    prefix = f"shmring-pytest-lldemo-{os.getpid()}-{size}"
    count = 20000  # 64 slots: more than 300 laps
    _run_cpp_producer(_ll_demo(), prefix, "spsc", count, size, lambda rx: rx.pop(timeout=30), LL)


def _try_push_until_taken(tx, msg: bytes, proc) -> None:
    while not tx.try_push(msg):
        assert proc.poll() is None, proc.communicate()[0]


@pytest.mark.parametrize("size", [16, 61, 100])
def test_python_producer_cpp_consumer_low_latency(size):
    prefix = f"shmring-pytest-pylldemo-{os.getpid()}-{size}"
    _run_cpp_consumer(_ll_demo(), prefix, "spsc", 20000, size, _try_push_until_taken, LL)


def test_demo_refuses_mpmc_low_latency():
    import subprocess

    demo = _ll_demo()
    r = subprocess.run([demo, "--kind", "mpmc", "--slot-format", LL, "--messages", "10"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--slot-format low_latency needs --kind spsc" in r.stdout + r.stderr
