"""Tests of the shmring Python module."""

from __future__ import annotations

import gc
import hashlib
import multiprocessing as mp
import os
import signal
import struct
import threading
import time
import uuid

import pytest

import shmring

try:
    import numpy as np
except ImportError:  # numpy is optional
    np = None


@pytest.fixture
def name():
    n = f"shmring-pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield n
    shmring.unlink(n, missing_ok=True)


def message(seq: int, size: int) -> bytes:
    """seq (8 bytes) + sha256 of the body (32 bytes) + a body derived from seq."""
    body = bytes((seq * 7 + i) & 0xFF for i in range(size - 40))
    return struct.pack("<Q", seq) + hashlib.sha256(body).digest() + body


def verify(msg: bytes, seq: int, size: int) -> None:
    assert len(msg) == size
    assert struct.unpack_from("<Q", msg)[0] == seq
    assert msg[8:40] == hashlib.sha256(msg[40:]).digest()


# ---- segments ---------------------------------------------------------------


def test_create_open_properties(name):
    seg = shmring.create(name, kind="mpmc", capacity=16, slot_size=100, mode=0o600)
    assert (seg.name, seg.kind, seg.capacity, seg.slot_size) == (name, "mpmc", 16, 100)
    assert seg.created
    other = shmring.open(name)
    assert (other.kind, other.capacity, other.slot_size) == ("mpmc", 16, 100)
    assert not other.created
    assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o600
    shmring.unlink(name)
    assert not os.path.exists(f"/dev/shm/{name}")


# ---- copy in, copy out --------------------------------------------------------


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_round_trip(name, kind):
    seg = shmring.create(name, kind=kind, capacity=8, slot_size=256)
    tx, rx = seg.producer(), seg.consumer()
    assert type(tx).__name__ == f"{kind.capitalize()}Producer"
    assert rx.try_pop() is None
    for seq in range(100):  # wraps the ring many times
        size = 40 + seq % 200
        if seq % 2:
            assert tx.try_push(message(seq, size))
        else:
            tx.push(bytearray(message(seq, size)), timeout=1.0)
        got = rx.pop(timeout=1.0) if seq % 3 else rx.try_pop()
        verify(got, seq, size)
    tx.push(memoryview(b""))
    assert rx.pop(timeout=0) == b""
    for i in range(8):
        assert tx.try_push(bytes([i]))
    assert not tx.try_push(b"full")
    assert list(rx.iter(timeout=0.05)) == [bytes([i]) for i in range(8)]


@pytest.mark.parametrize("lanes", [0, 4])
def test_mpmc_threads(name, lanes):
    seg = shmring.create(name, kind="mpmc", capacity=16, slot_size=64, lanes=lanes)
    assert seg.lanes == lanes
    per_producer, producers, consumers = 2000, 3, 2
    received = [[] for _ in range(consumers)]

    def produce(p):
        tx = seg.producer()
        for i in range(per_producer):
            tx.push(struct.pack("<II", p, i), timeout=10)

    def consume(c):
        rx = seg.consumer()
        for m in rx.iter(timeout=2.0):
            received[c].append(struct.unpack("<II", m))

    threads = [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
    threads += [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = sorted(m for r in received for m in r)
    assert everything == [(p, i) for p in range(producers) for i in range(per_producer)]
    for r in received:  # each producer's messages arrive in order at each consumer
        for p in range(producers):
            seq = [i for q, i in r if q == p]
            assert seq == sorted(seq)


def test_mpmc_read_ahead(name):
    seg = shmring.create(name, kind="mpmc", capacity=16, slot_size=64)
    tx, rx, other = seg.producer(), seg.consumer(), seg.consumer()
    assert rx.read_ahead == 1
    rx.read_ahead = 4
    assert rx.read_ahead == 4
    for i in range(8):
        tx.push(bytes([i]))
    assert rx.pop() == b"\x00"  # and 1-3 are read ahead by rx
    assert (len(rx), len(other)) == (7, 4)  # len counts what a consumer read ahead
    assert other.pop() == b"\x04"
    assert [rx.pop() for _ in range(3)] == [b"\x01", b"\x02", b"\x03"]
    assert rx.pop() == b"\x05"  # one claim of 5-7
    rx.close()  # 6 and 7 go back: nobody read past them
    assert [other.pop() for _ in range(2)] == [b"\x06", b"\x07"]
    assert other.abandoned == 0
    rx2 = seg.consumer()
    rx2.read_ahead = 1000
    assert rx2.read_ahead == 16


def test_len_counts_every_lane(name):
    seg = shmring.create(name, kind="mpmc", capacity=16, slot_size=64, lanes=2)
    a, b, rx = seg.producer(), seg.producer(), seg.consumer()
    for i in range(3):
        a.push(b"a%d" % i)
    b.push(b"b0")
    assert (len(rx), len(a), rx.empty()) == (4, 4, False)
    assert a.position == 4 and rx.position == 0
    assert sorted(rx.pop() for _ in range(4)) == [b"a0", b"a1", b"a2", b"b0"]
    assert (len(rx), rx.empty(), rx.position) == (0, True, 4)


def test_mpmc_lanes_are_checked(name):
    with pytest.raises(shmring.InvalidArgumentError, match="1 to 16 lanes"):
        shmring.create(name, kind="mpmc", capacity=16, lanes=3)
    with pytest.raises(shmring.InvalidArgumentError, match="only mpmc rings"):
        shmring.create(name, kind="spsc", capacity=16, lanes=2)
    seg = shmring.create(name, kind="mpmc", capacity=16, lanes=2, unlink_on_close=True)
    assert shmring.open(name).lanes == 2
    with pytest.raises(shmring.Error, match="2 lanes"):
        shmring.create(name, kind="mpmc", capacity=16, exist_ok=True)
    seg.close()


# ---- zero copy --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_zero_copy_write_read(name, kind):
    seg = shmring.create(name, kind=kind, capacity=4, slot_size=128)
    tx, rx = seg.producer(), seg.consumer()
    with tx.claim(timeout=1.0) as slot:
        assert slot.writable and len(slot) == 128 and slot.size is None  # until written
        with memoryview(slot) as view:
            assert not view.readonly and view.nbytes == 128
            view[:5] = b"hello"
        slot.size = 5
    with tx.claim(timeout=1.0) as slot:
        slot.write(b"second")
    slot = tx.try_claim()
    slot.write(b"third, explicit commit")
    slot.commit(5)
    assert slot.finished
    with rx.peek(timeout=1.0) as msg:
        assert not msg.writable and msg.size == 5
        with memoryview(msg) as view:
            assert view.readonly and bytes(view) == b"hello"
            with pytest.raises(TypeError):
                view[0] = 0
    with rx.peek(timeout=1.0) as msg:
        assert msg.tobytes() == b"second"
    assert rx.pop(timeout=1.0) == b"third"
    assert rx.try_peek() is None


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_claim_aborts_on_exception(name, kind):
    seg = shmring.create(name, kind=kind, capacity=4, slot_size=64)
    tx, rx = seg.producer(), seg.consumer()
    with pytest.raises(RuntimeError, match="boom"):
        with tx.claim(timeout=1.0) as slot:
            slot.write(b"never published")
            raise RuntimeError("boom")
    slot = tx.claim(timeout=1.0)
    slot.write(b"aborted too")
    slot.abort()
    tx.push(b"published")
    assert rx.pop(timeout=1.0) == b"published"
    assert rx.try_pop() is None


def _raise_holding_a_view(slot, exc):
    """Raises exc while a local holds a numpy view of the slot: the
    traceback keeps this frame, and so the view, alive."""
    view = np.frombuffer(slot, dtype=np.uint8)  # noqa: F841 (kept by the traceback)
    raise exc


def _assert_claim_held(tx, rx, kind):
    """The ring's only slot (capacity 1) is still claimed, neither published
    nor given back."""
    if kind == "spsc":
        with pytest.raises(BufferError, match="still lent"):
            tx.try_push(b"x")
    else:
        assert rx.try_pop() is None  # would pass over an aborted slot
        assert not tx.try_push(b"x")  # so this would find it free


def _assert_claim_aborted(tx, rx):
    assert rx.try_pop() is None  # nothing was published (MPMC: passes the aborted slot)
    assert tx.try_push(b"after")
    assert rx.pop(timeout=1.0) == b"after"


@pytest.mark.skipif(np is None, reason="numpy not installed")
@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_claim_exception_with_live_view_propagates(name, kind):
    # The user's exception comes out unchanged (not a BufferError about the
    # view); the abort waits for the last view, so the view never sees a
    # later writer's bytes.
    seg = shmring.create(name, kind=kind, capacity=1, slot_size=16)
    tx, rx = seg.producer(), seg.consumer()
    with pytest.raises(KeyError, match="mine") as info:
        with tx.claim(timeout=1.0) as slot:
            slot.write(b"never published")
            _raise_holding_a_view(slot, KeyError("mine"))
    assert slot.finished
    _assert_claim_held(tx, rx, kind)
    info = None  # the exception, its traceback's frames and the view go
    gc.collect()
    _assert_claim_aborted(tx, rx)

    # Same with a memoryview kept in the block's own frame.
    with pytest.raises(ZeroDivisionError):
        with tx.claim(timeout=1.0) as slot:
            mv = memoryview(slot)
            mv[:3] = b"abc"
            1 / 0
    _assert_claim_held(tx, rx, kind)
    mv.release()
    _assert_claim_aborted(tx, rx)


@pytest.mark.skipif(np is None, reason="numpy not installed")
@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_peek_exception_with_live_view_propagates(name, kind):
    seg = shmring.create(name, kind=kind, capacity=1, slot_size=16)
    tx, rx = seg.producer(), seg.consumer()
    tx.push(b"first")
    with pytest.raises(KeyError, match="mine") as info:
        with rx.peek(timeout=1.0) as msg:
            _raise_holding_a_view(msg, KeyError("mine"))
    assert msg.finished
    assert not tx.try_push(b"second")  # the message is held until the view goes
    info = None
    gc.collect()
    assert tx.try_push(b"second")  # released with the view
    assert rx.pop(timeout=1.0) == b"second"


def test_slot_size_checked(name):
    seg = shmring.create(name, capacity=4, slot_size=64)
    tx = seg.producer()
    with tx.claim(timeout=1.0) as slot:
        with pytest.raises(ValueError, match="exceeds the slot size 64"):
            slot.size = 65
        with pytest.raises(ValueError):
            slot.write(b"x" * 65)
        slot.size = 0


@pytest.mark.skipif(np is None, reason="numpy not installed")
def test_numpy_in_place(name):
    seg = shmring.create(name, kind="mpmc", capacity=4, slot_size=4096)
    tx, rx = seg.producer(), seg.consumer()
    data = np.arange(1000, dtype=np.float32)
    slot = tx.claim(timeout=1.0)
    frame = np.frombuffer(slot, dtype=np.float32, count=1000)
    frame[:] = data
    del frame  # the slot is committed once no view of it is left
    slot.commit(data.nbytes)
    with rx.peek(timeout=1.0) as msg:
        got = np.frombuffer(msg, dtype=np.float32)
        assert not got.flags.writeable
        assert np.array_equal(got, data)
        del got
    tx.push(data)  # any C-contiguous buffer
    assert np.array_equal(np.frombuffer(rx.pop(timeout=1.0), dtype=np.float32), data)


# ---- lifetime -----------------------------------------------------------------


def test_view_keeps_segment_alive(name):
    seg = shmring.create(name, capacity=2, slot_size=32)
    tx, rx = seg.producer(), seg.consumer()
    tx.push(b"still mapped")
    msg = rx.peek(timeout=1.0)
    del seg, tx, rx
    shmring.unlink(name)
    gc.collect()
    with memoryview(msg) as view:  # the slot holds its handle, the handle the mapping
        assert bytes(view) == b"still mapped"
    msg.release()


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_released_slot_refuses_views(name, kind):
    seg = shmring.create(name, kind=kind, capacity=2, slot_size=32)
    tx, rx = seg.producer(), seg.consumer()
    with tx.claim(timeout=1.0) as wslot:
        wslot.write(b"abc")
    with pytest.raises(BufferError, match="already finished"):
        memoryview(wslot)
    with pytest.raises(BufferError):
        wslot.write(b"late")
    with rx.peek(timeout=1.0) as rslot:
        assert rslot.tobytes() == b"abc"
    with pytest.raises(BufferError, match="already finished"):
        memoryview(rslot)
    with pytest.raises(BufferError):
        rslot.tobytes()


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_live_view_defers_release(name, kind):
    seg = shmring.create(name, kind=kind, capacity=2, slot_size=32)
    tx, rx = seg.producer(), seg.consumer()
    tx.push(b"first")
    tx.push(b"second")
    msg = rx.peek(timeout=1.0)
    view = memoryview(msg)
    with pytest.raises(BufferError, match="still alive"):
        msg.release()
    assert bytes(view) == b"first"  # the slot is still held: never recycled
    if kind == "spsc":
        with pytest.raises(BufferError, match="still lent"):
            rx.try_pop()
    assert not tx.try_push(b"third")  # the ring is still full
    view.release()  # the last view: the slot goes back now
    assert tx.try_push(b"third")
    assert rx.pop(timeout=1.0) == b"second"
    assert rx.pop(timeout=1.0) == b"third"


def test_unfinished_slot_is_given_back_when_dropped(name):
    seg = shmring.create(name, capacity=1, slot_size=16)
    tx, rx = seg.producer(), seg.consumer()
    slot = tx.claim(timeout=1.0)
    slot.write(b"dropped")
    del slot  # aborted
    tx.push(b"kept")
    msg = rx.peek(timeout=1.0)
    del msg  # released
    assert rx.try_pop() is None
    assert tx.try_push(b"room again")


# ---- bad input ----------------------------------------------------------------


@pytest.mark.skipif(np is None, reason="numpy not installed")
@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_push_refuses_buffers_of_pointers(name, kind):
    # An object array's buffer holds PyObject pointers: sent, they are
    # meaningless to the reader (and a pointer to this process's memory).
    seg = shmring.create(name, kind=kind, capacity=4, slot_size=256)
    tx, rx = seg.producer(), seg.consumer()
    objects = np.array([1, "two", None], dtype=object)
    with pytest.raises(TypeError, match="format 'O'"):
        tx.push(objects, timeout=1.0)
    with pytest.raises(TypeError, match="format 'O'"):
        tx.try_push(objects)
    mixed = np.zeros(2, dtype=[("a", "<i4"), ("b", "O")])
    with pytest.raises(TypeError, match=r"format '.*O.*'"):
        tx.push(mixed, timeout=1.0)
    pointers = memoryview(bytearray(16)).cast("P")
    with pytest.raises(TypeError, match="format 'P'"):
        tx.push(pointers, timeout=1.0)
    with tx.claim(timeout=1.0) as slot:
        with pytest.raises(TypeError, match="format 'O'"):
            slot.write(objects)
        slot.size = 0
    assert rx.pop(timeout=1.0) == b""
    # Copying into an object array would make pointers of the peer's bytes.
    tx.push(b"\x01" * 24, timeout=1.0)
    with pytest.raises(TypeError, match="format 'O'"):
        rx.pop_into(np.empty(3, dtype=object), timeout=1.0)
    assert rx.pop(timeout=1.0) == b"\x01" * 24  # still first in line
    assert rx.try_pop() is None

    # Plain data of every kind goes through: numbers, structs, bytes.
    plain = [
        np.arange(5, dtype=np.float64),
        np.arange(6, dtype=">i2").reshape(2, 3),
        np.zeros(3, dtype=[("x", "<f4"), ("n", "u1"), ("s", "S3")]),
        np.array([1 + 2j], dtype=np.complex64),
        np.array([True, False]),
        np.array(["ab"], dtype="U2"),
        memoryview(b"abc").cast("c"),
    ]
    for data in plain:
        tx.push(data, timeout=1.0)
        assert rx.pop(timeout=1.0) == memoryview(data).tobytes()




def test_bad_name():
    with pytest.raises(shmring.InvalidArgumentError) as e:
        shmring.create("a/b")
    assert e.value.errc == "invalid_name"
    assert "contains '/'" in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, shmring.Error)
    with pytest.raises(shmring.Error, match="invalid segment name"):
        shmring.open("..")


def test_missing_segment(name):
    with pytest.raises(shmring.NotFoundError) as e:
        shmring.open(name)
    assert e.value.errc == "not_found"
    assert isinstance(e.value, FileNotFoundError)
    assert name in str(e.value) and "segment not found" in str(e.value)
    with pytest.raises(FileNotFoundError):
        shmring.unlink(name)
    shmring.unlink(name, missing_ok=True)


def test_bad_geometry_and_kind(name):
    with pytest.raises(shmring.Error) as e:
        shmring.create(name, capacity=3)
    assert e.value.errc == "invalid_capacity"
    with pytest.raises(ValueError, match="kind must be 'spsc', 'mpmc' or 'broadcast'"):
        shmring.create(name, kind="ring")
    shmring.create(name, kind="spsc", capacity=4, slot_size=16)
    with pytest.raises(shmring.ExistsError) as e:
        shmring.create(name)
    assert e.value.errc == "already_exists" and isinstance(e.value, FileExistsError)
    with pytest.raises(shmring.Error) as e:
        shmring.open(name, kind="mpmc")
    assert e.value.errc == "kind_mismatch"
    assert "the ring is spsc, the caller asked for mpmc" in str(e.value)


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_message_too_large(name, kind):
    seg = shmring.create(name, kind=kind, capacity=4, slot_size=16)
    tx = seg.producer()
    with pytest.raises(ValueError, match="message of 17 bytes does not fit the ring's 16-byte slots"):
        tx.push(b"x" * 17)
    with pytest.raises(ValueError):
        tx.try_push(b"x" * 17)
    with pytest.raises(TypeError):
        tx.push("text is not bytes")


def test_spsc_role_taken(name):
    seg = shmring.create(name, capacity=4, slot_size=16)
    tx = seg.producer()
    with pytest.raises(shmring.Error) as e:
        seg.producer()
    assert e.value.errc == "role_taken"
    del tx
    seg.producer()  # free again


# ---- timeouts and signals -------------------------------------------------------


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_timeouts(name, kind):
    seg = shmring.create(name, kind=kind, capacity=1, slot_size=16)
    tx, rx = seg.producer(), seg.consumer()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        rx.pop(timeout=0.2)
    with pytest.raises(TimeoutError):
        rx.peek(timeout=0.1)
    assert 0.25 <= time.monotonic() - start < 5
    with pytest.raises(TimeoutError):
        rx.pop(timeout=0)
    tx.push(b"fills it", timeout=0)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        tx.push(b"no room", timeout=0.2)
    with pytest.raises(TimeoutError):
        tx.claim(timeout=0.1)
    assert 0.25 <= time.monotonic() - start < 5
    assert tx.try_claim() is None
    with pytest.raises(ValueError):
        rx.pop(timeout=-1)
    assert list(rx.iter(timeout=0.05)) == [b"fills it"]


def test_blocking_pop_wakes_for_other_thread(name):
    seg = shmring.create(name, capacity=2, slot_size=16)
    tx, rx = seg.producer(), seg.consumer()
    timer = threading.Timer(0.2, lambda: tx.push(b"late"))
    timer.start()
    assert rx.pop() == b"late"  # no timeout: waits, the GIL released
    timer.join()


def test_blocking_pop_interrupted_by_signal(name):
    seg = shmring.create(name, capacity=2, slot_size=16)
    rx = seg.consumer()

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted()

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        start = time.monotonic()
        with pytest.raises(Interrupted):
            rx.pop()  # would wait forever
        assert time.monotonic() - start < 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- across processes -------------------------------------------------------


def _producer_process(name: str, first: int, count: int, size: int, attached=None) -> None:
    tx = shmring.open(name).producer()
    if attached is not None:
        # Every producer attaches before any pushes: the last one to leave
        # ends the stream, so one that finished before the next had attached
        # would end it too early.
        attached.wait(timeout=60)
    for seq in range(first, first + count):
        if seq % 2:
            tx.push(message(seq, size), timeout=30)
        else:
            with tx.claim(timeout=30) as slot:
                slot.write(message(seq, size))


@pytest.mark.parametrize("kind,producers", [("spsc", 1), ("mpmc", 2)])
def test_across_processes(name, kind, producers):
    count, size = 3000, 100
    seg = shmring.create(name, kind=kind, capacity=64, slot_size=size)
    rx = seg.consumer()
    ctx = mp.get_context("spawn")
    attached = ctx.Barrier(producers)
    procs = [
        ctx.Process(target=_producer_process, args=(name, p * count, count, size, attached))
        for p in range(producers)
    ]
    for p in procs:
        p.start()
    expected = [p * count for p in range(producers)]  # next seq per producer
    for _ in range(count * producers):
        with rx.peek(timeout=30) as msg:
            data = msg.tobytes()
        seq = struct.unpack_from("<Q", data)[0]
        p = seq // count
        assert seq == expected[p], "lost or reordered message"
        verify(data, seq, size)
        expected[p] += 1
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    # Nothing beyond the last message: the producers' exit ended the stream.
    with pytest.raises(shmring.EndOfStream):
        rx.try_pop()


# ---- C++ producer -> Python consumer ----------------------------------------
#
# examples/demo_pipeline.cpp (shmring-demo --role producer) streams messages
# of [0, 8) sequence number, [8, 16) checksum of the body, then the body; the
# checksum is reimplemented here to verify every message.

_M64 = (1 << 64) - 1
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F


def _rotl(v: int, r: int) -> int:
    return ((v << r) | (v >> (64 - r))) & _M64


def _demo_checksum(seq: int, body: bytes) -> int:
    lane = [seq ^ _P1, (seq + _P2) & _M64, _rotl(seq, 17), ~seq & _M64]
    i, n = 0, len(body)
    while i + 32 <= n:
        for k in range(4):
            word = int.from_bytes(body[i + 8 * k : i + 8 * k + 8], "little")
            lane[k] = (_rotl((lane[k] + word * _P2) & _M64, 31) * _P1) & _M64
        i += 32
    while i + 8 <= n:
        word = int.from_bytes(body[i : i + 8], "little")
        lane[0] = (_rotl((lane[0] + word * _P2) & _M64, 31) * _P1) & _M64
        i += 8
    while i < n:
        lane[1] = (_rotl(lane[1] ^ ((body[i] * _P1) & _M64), 11) * _P2) & _M64
        i += 1
    h = (_rotl(lane[0], 1) + _rotl(lane[1], 7) + _rotl(lane[2], 12) + _rotl(lane[3], 18)) & _M64
    h ^= n
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    return h


def _find_demo() -> str | None:
    candidates = [os.environ.get("SHMRING_DEMO", "")]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates.append(os.path.join(root, "build", "examples", "shmring-demo"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _demo() -> str:
    """shmring-demo, or the test is skipped."""
    demo = _find_demo()
    if demo is None:
        pytest.skip("shmring-demo not built (build/examples/shmring-demo or $SHMRING_DEMO)")
    return demo


def _demo_cmd(demo: str, role: str, prefix: str, kind: str, count: int, size: int,
              slot_format: str | None = None) -> list[str]:
    """`demo` streaming `count` messages of `size` bytes through <prefix>-data
    (64 slots; -ping / -pong unused: --round-trips 0)."""
    fmt = [] if slot_format is None else ["--slot-format", slot_format]
    return [demo, "--role", role, "--name", prefix, "--kind", kind, *fmt, "--messages", str(count),
            "--size", str(size), "--capacity", "64", "--batch", "4", "--round-trips", "0",
            "--no-pin", "--timeout", "30"]


def _unlink_demo_rings(prefix: str) -> None:
    for suffix in ("data", "ping", "pong"):
        shmring.unlink(f"{prefix}-{suffix}", missing_ok=True)


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _run_cpp_producer(demo: str, prefix: str, kind: str, count: int, size: int, read,
                      slot_format: str | None = None) -> None:
    """Runs `demo` --role producer, waits for the rings it makes, reads its
    `count` messages with read(consumer) and checks each one's size, sequence
    number and checksum; then the demo must exit 0 and the ring be empty."""
    import subprocess

    cmd = _demo_cmd(demo, "producer", prefix, kind, count, size, slot_format)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                seg = shmring.open(f"{prefix}-data", kind=kind)
                break
            except shmring.NotFoundError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "the C++ producer did not create its ring"
                time.sleep(0.01)
        assert seg.slot_format == (slot_format or "plain")
        assert seg.slot_size == size
        rx = seg.consumer()
        for seq in range(count):
            data = read(rx)
            assert len(data) == size, f"message {seq}"
            assert int.from_bytes(data[:8], "little") == seq
            assert int.from_bytes(data[8:16], "little") == _demo_checksum(seq, data[16:]), \
                f"message {seq}: bad checksum"
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        with pytest.raises(shmring.EndOfStream):  # all read, and the producer ended the stream
            rx.try_pop()
    finally:
        _stop(proc)
        _unlink_demo_rings(prefix)


def _peek_bytes(rx) -> bytes:
    with rx.peek(timeout=30) as msg:
        return msg.tobytes()


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_cpp_producer_python_consumer(kind):
    prefix = f"shmring-pytest-demo-{os.getpid()}-{kind}"
    count, size = 20000, 61  # 45-byte body: every branch of the checksum
    _run_cpp_producer(_demo(), prefix, kind, count, size, _peek_bytes)


# ---- Python producer -> C++ consumer ----------------------------------------
#
# shmring-demo --role consumer opens the rings a producer made (<name>-data,
# and -ping / -pong, unused with --round-trips 0) and verifies every message's
# size, sequence number and checksum; it exits 0 only if all were right.


def _demo_message(seq: int, size: int) -> bytes:
    """The message examples/demo_pipeline.cpp's fill_message() writes."""
    body = bytearray(size - 16)
    word = (seq * _P1) & _M64
    i = 0
    while i + 8 <= len(body):
        body[i : i + 8] = word.to_bytes(8, "little")
        word = (word + 1) & _M64
        i += 8
    while i < len(body):
        body[i] = (word >> (8 * (i % 8))) & 0xFF
        i += 1
    return seq.to_bytes(8, "little") + _demo_checksum(seq, bytes(body)).to_bytes(8, "little") + body


def _run_cpp_consumer(demo: str, prefix: str, kind: str, count: int, size: int, send_even,
                      slot_format: str | None = None) -> None:
    """Makes <prefix>-data (and -ping / -pong), runs `demo` --role consumer on
    them and sends it `count` messages: odd ones with push(timeout), even ones
    with send_even(producer, message, demo process). The demo must report
    every one of them right."""
    import subprocess

    cmd = _demo_cmd(demo, "consumer", prefix, kind, count, size, slot_format)
    fmt = {} if slot_format is None else {"slot_format": slot_format}
    try:
        data = shmring.create(f"{prefix}-data", kind=kind, capacity=64, slot_size=size, **fmt)
        for suffix in ("ping", "pong"):
            shmring.create(f"{prefix}-{suffix}", kind=kind, capacity=16, slot_size=size, **fmt)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            tx = data.producer()
            for seq in range(count):
                msg = _demo_message(seq, size)
                if seq % 2:
                    tx.push(msg, timeout=30)
                else:
                    send_even(tx, msg, proc)
            out, _ = proc.communicate(timeout=60)
        finally:
            _stop(proc)
        assert proc.returncode == 0, out
        assert f"OK, all {count:,} messages" in out, out
    finally:
        _unlink_demo_rings(prefix)


def _write_claimed(tx, msg: bytes, proc) -> None:
    with tx.claim(timeout=30) as slot:
        slot.write(msg)


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_python_producer_cpp_consumer(kind):
    prefix = f"shmring-pytest-pydemo-{os.getpid()}-{kind}"
    count, size = 20000, 61  # 45-byte body: every branch of the checksum
    _run_cpp_consumer(_demo(), prefix, kind, count, size, _write_claimed)


def test_mpmc_recovers_a_claim_of_a_dead_producer(name):
    seg = shmring.create(name, kind="mpmc", capacity=8, slot_size=64)
    rx = seg.consumer()
    tx = seg.producer()  # attached before the death: attaching recovers by itself
    pid = os.fork()
    if pid == 0:  # a producer that dies holding a claim, its handle never closed
        try:
            tx = shmring.open(name).producer()
            tx.push(b"first")
            slot = tx.try_claim()  # position 1, held (a dropped Slot would abort it)
            assert slot is not None
            os._exit(0)  # dies holding it
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert rx.pop(timeout=5.0) == b"first"
    assert tx.try_push(b"second")  # position 2, behind the dead claim
    assert rx.try_pop() is None, "position 1 is still claimed"
    assert tx.recover() == 1
    assert tx.abandoned == 1 and rx.abandoned == 0
    assert rx.try_pop() == b"second", "the dead claim was skipped, never delivered"
    assert tx.recover() == 0


def test_open_options(name):
    shmring.create(name, capacity=4, slot_size=16)
    seg = shmring.open(name, allow_foreign_owner=True, init_timeout=0.0)
    assert seg.capacity == 4
    with pytest.raises(ValueError):
        shmring.open(name, init_timeout=-1.0)
    assert not hasattr(seg.producer(), "recover"), "recovery is an MPMC matter"


# ---- fork -------------------------------------------------------------------


def _push_through_inherited(tx, rx, result):
    """In a fork child: every call of the parent's handles is refused."""
    refused = 0
    for call in (lambda: tx.try_push(b"child"), lambda: tx.push(b"child", timeout=0.01),
                 lambda: rx.try_pop(), lambda: rx.pop(timeout=0.01)):
        try:
            call()
        except shmring.WrongProcessError as e:
            refused += "attached by another process" in str(e)
    result.put(refused)


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_fork_child_cannot_use_parents_handles(name, kind):
    seg = shmring.create(name, kind=kind, capacity=8, slot_size=64)
    tx, rx = seg.producer(), seg.consumer()
    assert tx.try_push(b"parent 0")
    ctx = mp.get_context("fork")
    result = ctx.Queue()
    child = ctx.Process(target=_push_through_inherited, args=(tx, rx, result))
    child.start()
    assert result.get(timeout=30) == 4
    child.join(timeout=30)
    assert child.exitcode == 0
    # The child's attempts reached nothing; the parent's handles work on.
    assert tx.try_push(b"parent 1")
    assert rx.try_pop() == b"parent 0"
    assert rx.try_pop() == b"parent 1"
    assert rx.try_pop() is None


def _consume_own(name, count, result):
    rx = shmring.open(name).consumer()
    result.put([rx.pop(timeout=10) for _ in range(count)])


def test_fork_child_attaches_its_own_handle(name):
    seg = shmring.create(name, kind="spsc", capacity=64, slot_size=64)
    tx = seg.producer()
    ctx = mp.get_context("fork")
    result = ctx.Queue()
    child = ctx.Process(target=_consume_own, args=(name, 100, result))
    child.start()
    sent = [message(i, 64) for i in range(100)]
    for m in sent:
        tx.push(m, timeout=10)
    got = result.get(timeout=30)
    child.join(timeout=30)
    for i, m in enumerate(got):
        verify(m, i, 64)


def test_wait_policy_is_settable_and_applies(name):
    with shmring.create(name, capacity=4, slot_size=64, unlink_on_close=True) as seg:
        with seg.producer() as tx, seg.consumer() as rx:
            default = rx.wait_policy
            assert default == shmring.WaitPolicy()
            assert default.spin_iterations == 4000 and default.yield_iterations == 32
            assert default.spin_time == pytest.approx(20e-6)
            rx.wait_policy = shmring.WaitPolicy(spin_time=0, yield_iterations=0)
            assert rx.wait_policy.spin_time == 0 and rx.wait_policy.yield_iterations == 0
            assert tx.wait_policy == default, "each handle has its own"
            # Sleeping at once still receives what is pushed meanwhile.
            got = []
            t = threading.Thread(target=lambda: got.append(rx.pop(timeout=5)))
            t.start()
            tx.push(b"after the sleep began")
            t.join()
            assert got == [b"after the sleep began"]
            with pytest.raises(ValueError, match="spin_time"):
                shmring.WaitPolicy(spin_time=-1)
            assert "spin_time=0" in repr(rx.wait_policy)
