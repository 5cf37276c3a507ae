"""Typed rings: fixed-shape records (numpy dtype + shape) lent in place."""

from __future__ import annotations

import multiprocessing as mp
import os
import uuid

import pytest

import shmring

np = pytest.importorskip("numpy")

FRAME = (48, 64, 3)  # small frames: CI runs this on two cores


@pytest.fixture
def name():
    n = f"shmring-pytest-typed-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield n
    shmring.unlink(n, missing_ok=True)


def frame(seq: int, shape=FRAME) -> np.ndarray:
    """A frame whose every byte depends on seq and its position."""
    return ((np.arange(np.prod(shape), dtype=np.uint64) * 31 + seq * 7) % 251).astype(np.uint8).reshape(shape)


def test_create_and_open_typed(name):
    seg = shmring.create(name, capacity=4, dtype=np.uint8, shape=FRAME)
    assert isinstance(seg, shmring.TypedSegment)
    assert seg.slot_size == seg.nbytes == 48 * 64 * 3
    assert (seg.dtype, seg.shape, seg.kind, seg.capacity) == (np.dtype(np.uint8), FRAME, "spsc", 4)
    other = shmring.open(name, dtype="u1", shape=list(FRAME))
    assert other.shape == FRAME and not other.created
    # The creator stored the record: an opener need not repeat it.
    found = shmring.open(name)
    assert isinstance(found, shmring.TypedSegment)
    assert (found.dtype, found.shape) == (np.dtype(np.uint8), FRAME)


def test_open_finds_a_structured_record_and_refuses_another(name):
    sample = np.dtype({"names": ["t", "xyz", "ok"], "formats": ["<u8", ("<f4", (3,)), "u1"],
                       "offsets": [0, 8, 24], "itemsize": 32})
    seg = shmring.create(name, capacity=8, dtype=sample, shape=(2,))
    rec = np.zeros(2, sample)
    rec["t"] = [5, 6]
    rec["xyz"] = [[1, 2, 3], [4, 5, 6]]
    seg.producer().push(rec)
    found = shmring.open(name)
    assert (found.dtype, found.shape) == (sample, (2,))
    assert np.array_equal(found.consumer().pop(timeout=1.0), rec)
    # An opener that names another record is refused, naming both.
    with pytest.raises(shmring.InvalidArgumentError,
                       match=r"holds records of \(2,\) .* not \(2,\) float64"):
        shmring.open(name, dtype=np.float64, shape=(2,))
    with pytest.raises(shmring.InvalidArgumentError, match=r"not \(8,\) float64"):
        shmring.create(name, capacity=8, dtype=np.float64, shape=(8,), exist_ok=True)
    # The same record, given again, is fine.
    assert shmring.open(name, dtype=sample, shape=(2,)).shape == (2,)
    assert isinstance(shmring.create(name, capacity=8, dtype=sample, shape=(2,), exist_ok=True),
                      shmring.TypedSegment)


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_claim_writes_the_record_in_place(name, kind):
    seg = shmring.create(name, kind=kind, capacity=4, dtype=np.uint8, shape=FRAME)
    tx, rx = seg.producer(), seg.consumer()
    for seq in range(10):  # wraps the ring
        with tx.claim(timeout=1.0) as slot:
            assert slot.size == seg.nbytes
            view = slot.array
            assert view.shape == FRAME and view.dtype == np.uint8 and view.flags.writeable
            view[...] = frame(seq)
            del view
        with rx.peek(timeout=1.0) as msg:
            got = msg.array
            assert not got.flags.writeable
            assert np.array_equal(got, frame(seq))
            with pytest.raises(ValueError):
                got[0, 0, 0] = 1
            with memoryview(msg) as mv:
                assert mv.shape == FRAME and mv.format == "B" and mv.readonly
            del got


def test_in_place_is_the_slot_itself(name):
    seg = shmring.create(name, capacity=2, dtype=np.float32, shape=(4, 4))
    tx, rx = seg.producer(), seg.consumer()
    with tx.claim(timeout=1.0) as slot:
        a, b = slot.array, np.asarray(slot)
        assert a.ctypes.data == b.ctypes.data  # two views, one slot
        a[...] = 1.5
        assert np.all(b == 1.5)
        del a, b
    with rx.peek(timeout=1.0) as msg:
        first = msg.array.ctypes.data
        assert np.all(msg.array == 1.5)
    tx.push(np.full((4, 4), 2.5, np.float32))
    tx.push(np.full((4, 4), 3.5, np.float32))
    with rx.peek(timeout=1.0) as msg:  # capacity 2: the third message is back in slot 0
        assert msg.array.ctypes.data != first
    with rx.peek(timeout=1.0) as msg:
        assert msg.array.ctypes.data == first
        assert np.all(msg.array == 3.5)


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_push_pop_copies(name, kind):
    seg = shmring.create(name, kind=kind, capacity=4, dtype="<f8", shape=(3, 5))
    tx, rx = seg.producer(), seg.consumer()
    data = np.arange(15, dtype=np.float64).reshape(3, 5)
    tx.push(data, timeout=1.0)
    assert tx.try_push(data[:, ::-1])  # not contiguous: copied once into the slot
    out = rx.pop(timeout=1.0)
    assert out.flags.writeable and out.flags.owndata and np.array_equal(out, data)
    assert np.array_equal(rx.try_pop(), data[:, ::-1])
    assert rx.try_pop() is None
    with pytest.raises(TimeoutError):
        rx.pop(timeout=0.05)
    for i in range(3):
        tx.push(data + i)
    got = list(rx.iter(timeout=0.05))
    assert len(got) == 3 and all(np.array_equal(g, data + i) for i, g in enumerate(got))


def test_structured_record(name):
    sample = np.dtype([("timestamp_ns", "<u8"), ("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    seg = shmring.create(name, kind="mpmc", capacity=8, dtype=sample)
    assert seg.shape == () and seg.slot_size == 20
    tx, rx = seg.producer(), seg.consumer()
    tx.push(np.array((42, 1.0, 2.0, 3.0), dtype=sample))
    with tx.claim(timeout=1.0) as slot:
        rec = slot.array
        rec["timestamp_ns"], rec["x"] = 43, -1.0
        del rec
    first = rx.pop(timeout=1.0)
    assert first["timestamp_ns"] == 42 and first["z"] == 3.0
    with rx.peek(timeout=1.0) as msg:
        assert msg.array["timestamp_ns"] == 43 and msg.array["x"] == -1.0
    aligned = np.dtype([("flag", "u1"), ("value", "<f8")], align=True)  # 7 padding bytes
    seg2 = shmring.create(name + "-aligned", capacity=2, dtype=aligned, shape=(3,))
    try:
        tx2, rx2 = seg2.producer(), seg2.consumer()
        with tx2.claim(timeout=1.0) as slot:
            rec = slot.array
            assert rec.dtype == aligned and rec.shape == (3,)
            rec["flag"], rec["value"] = [1, 2, 3], [0.5, 1.5, 2.5]
            del rec
        got = rx2.pop(timeout=1.0)
        assert list(got["flag"]) == [1, 2, 3] and list(got["value"]) == [0.5, 1.5, 2.5]
    finally:
        shmring.unlink(name + "-aligned")


def test_wrong_record_is_refused(name):
    seg = shmring.create(name, capacity=4, dtype=np.uint8, shape=FRAME)
    tx = seg.producer()
    with pytest.raises(ValueError, match=r"expected a \(48, 64, 3\) uint8 record, got \(48, 64\) uint8"):
        tx.push(np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match="got \\(48, 64, 3\\) float32"):
        tx.try_push(np.zeros(FRAME, np.float32))
    with tx.claim(timeout=1.0) as slot:
        with pytest.raises(ValueError, match="always holds one record of 9216 bytes"):
            slot.size = 10


def test_foreign_messages_on_a_typed_ring(name):
    raw = shmring.create(name, capacity=4, slot_size=64)
    rx = shmring.open(name, dtype=np.uint32, shape=(8,)).consumer()  # records of 32 bytes
    tx = raw.producer()
    tx.push(b"x" * 10)
    with pytest.raises(ValueError, match="message of 10 bytes is not one .* of 32 bytes; it was consumed"):
        rx.pop(timeout=1.0)
    tx.push(b"y" * 10)
    with pytest.raises(ValueError, match="message of 10 bytes is not one record of 32 bytes; it was consumed"):
        rx.peek(timeout=1.0)
    tx.push(b"z" * 40)
    with pytest.raises(ValueError, match="message of 40 bytes does not fit the buffer of 32 bytes; it is kept"):
        rx.pop(timeout=1.0)
    assert rx.handle.pop(timeout=1.0) == b"z" * 40  # the untyped handle drains it
    tx.push(np.arange(8, dtype=np.uint32).tobytes())
    assert np.array_equal(rx.pop(timeout=1.0), np.arange(8, dtype=np.uint32))


def test_bad_records(name):
    with pytest.raises(ValueError, match="Python objects"):
        shmring.create(name, dtype=object)
    with pytest.raises(ValueError, match="negative dimension"):
        shmring.create(name, dtype=np.uint8, shape=(2, -1))
    with pytest.raises(ValueError, match="holds no bytes"):
        shmring.create(name, dtype=np.uint8, shape=(0, 4))
    with pytest.raises(ValueError, match="sub-array"):
        shmring.create(name, dtype=np.dtype((np.float32, (3,))))
    with pytest.raises(ValueError, match="shape= needs a dtype="):
        shmring.create(name, shape=(4,))
    with pytest.raises(ValueError, match="slot_size 100 is smaller than one \\(10, 11\\) uint8 record"):
        shmring.create(name, slot_size=100, dtype=np.uint8, shape=(10, 11))
    assert not os.path.exists(f"/dev/shm/{name}")  # refused before creating anything
    shmring.create(name, slot_size=64)
    with pytest.raises(ValueError, match="does not fit the ring's 64-byte slots"):
        shmring.open(name, dtype=np.float64, shape=(9,))


def test_live_record_view_holds_the_slot(name):
    seg = shmring.create(name, capacity=1, dtype=np.int16, shape=(8,))
    tx, rx = seg.producer(), seg.consumer()
    tx.push(np.arange(8, dtype=np.int16))
    msg = rx.peek(timeout=1.0)
    kept = msg.array[2:5]  # a numpy view of the view: it holds the slot too
    with pytest.raises(BufferError, match="still alive"):
        msg.release()
    assert not tx.try_push(np.zeros(8, np.int16))  # not recycled while `kept` lives
    assert list(kept) == [2, 3, 4]
    del kept
    assert tx.try_push(np.zeros(8, np.int16))
    with pytest.raises(BufferError, match="already finished"):
        msg.array


def _frame_producer(name: str, count: int) -> None:
    tx = shmring.open(name, dtype=np.uint8, shape=FRAME).producer()
    for seq in range(count):
        if seq % 2:
            tx.push(frame(seq), timeout=30)
        else:
            with tx.claim(timeout=30) as slot:
                np.copyto(slot.array, frame(seq))


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_frames_across_processes(name, kind):
    count = 300
    seg = shmring.create(name, kind=kind, capacity=8, dtype=np.uint8, shape=FRAME)
    rx = seg.consumer()
    proc = mp.get_context("spawn").Process(target=_frame_producer, args=(name, count))
    proc.start()
    for seq in range(count):  # every frame verified in place, in order
        with rx.peek(timeout=30) as msg:
            assert np.array_equal(msg.array, frame(seq)), f"frame {seq} differs"
    proc.join(timeout=30)
    assert proc.exitcode == 0
    # Nothing beyond the last frame: the producer's exit ended the stream.
    with pytest.raises(shmring.EndOfStream):
        rx.try_pop()


def test_typed_broadcast_subscribers_lend_the_record(name):
    seg = shmring.create(name, kind="broadcast", subscribers=3, capacity=4, dtype=np.float32,
                         shape=(16, 8))
    subs = [seg.subscriber(), seg.subscriber(at="next")]
    tx = seg.producer()
    frame = np.arange(16 * 8, dtype=np.float32).reshape(16, 8)
    tx.push(frame)
    for s in subs:
        with s.peek(timeout=1.0) as msg:
            assert msg.array.shape == (16, 8) and msg.array.dtype == np.float32
            assert np.array_equal(msg.array, frame)  # in place, for each subscriber
    tx.push(frame * 2)
    for s in subs:
        assert np.array_equal(s.pop(timeout=1.0), frame * 2)
    # A reopened typed ring gives typed subscribers too.
    again = shmring.open(name)
    late = again.subscriber(at="newest")
    assert np.array_equal(late.pop(timeout=1.0), frame * 2)
