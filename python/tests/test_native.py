"""Lifetimes, pickling, slot sizes, iteration, introspection and argument
errors of the Python module: what makes it behave like a Python package."""

from __future__ import annotations

import errno
import inspect
import multiprocessing as mp
import os
import pickle
import pydoc
import re
import struct
import threading
import uuid

import pytest

import shmring

try:
    import numpy as np
except ImportError:  # numpy is optional here
    np = None

needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")


@pytest.fixture
def name():
    n = f"shmring-pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield n
    shmring.unlink(n, missing_ok=True)


def shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


def message(seq: int, size: int) -> bytes:
    body = bytes((seq * 13 + i) & 0xFF for i in range(size - 8))
    return struct.pack("<Q", seq) + body


# ---- lifetimes ----------------------------------------------------------------


def test_segment_with_block_closes_and_unlinks(name):
    with shmring.create(name, capacity=4, slot_size=64, unlink_on_close=True) as seg:
        assert shm_exists(name) and not seg.closed
        tx, rx = seg.producer(), seg.consumer()
        tx.push(b"x")
        assert rx.pop(timeout=1.0) == b"x"
    assert seg.closed and not shm_exists(name)
    with pytest.raises(shmring.ClosedError, match=f"segment '{name}' is closed") as e:
        seg.producer()
    assert e.value.errc == "closed" and isinstance(e.value, ValueError)
    assert repr(seg) == f"<shmring.Segment '{name}' closed>"
    seg.close()  # again: nothing
    # The handles keep their own mapping: they go on working after the
    # segment object is closed and its name is gone.
    tx.push(b"after")
    assert rx.pop(timeout=1.0) == b"after"


def test_close_keeps_the_name_unless_asked(name):
    seg = shmring.create(name, capacity=4, slot_size=64)
    seg.close()
    assert shm_exists(name)
    other = shmring.open(name)
    other.unlink()
    assert not shm_exists(name)
    with pytest.raises(shmring.NotFoundError):
        other.unlink()
    other.unlink(missing_ok=True)


def test_unlink_on_close_when_collected(name):
    seg = shmring.create(name, capacity=4, slot_size=64, unlink_on_close=True)
    del seg
    assert not shm_exists(name)


def test_forked_child_never_unlinks_its_parents_segment(name):
    seg = shmring.create(name, capacity=4, slot_size=64, unlink_on_close=True)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            seg.close()  # the child's copy: must leave the name alone
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert shm_exists(name)
    seg.close()
    assert not shm_exists(name)


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_closed_handle_gives_its_role_back_at_once(name, kind):
    seg = shmring.create(name, kind=kind, capacity=4, slot_size=64)
    with seg.producer() as tx:
        tx.push(b"one")
    assert tx.closed
    with pytest.raises(shmring.ClosedError) as e:
        tx.push(b"two")
    assert f"producer of segment '{name}' is closed" in str(e.value)
    for call in (lambda: len(tx), tx.empty, tx.try_claim, lambda: tx.position):
        with pytest.raises(shmring.ClosedError):
            call()
    assert repr(tx).endswith(" closed>") and name in repr(tx)
    tx.close()  # again: nothing
    tx2 = seg.producer()  # the SPSC role is free again: no role_taken
    tx2.push(b"two")
    with seg.consumer() as rx:
        assert [rx.pop(timeout=1.0), rx.pop(timeout=1.0)] == [b"one", b"two"]
    with pytest.raises(shmring.ClosedError, match="consumer"):
        rx.pop(timeout=0)


def test_close_with_a_lent_slot_keeps_the_role_until_it_is_finished(name):
    seg = shmring.create(name, capacity=4, slot_size=64)
    tx = seg.producer()
    slot = tx.claim(timeout=1.0)
    tx.close()
    with pytest.raises(shmring.ClosedError):
        tx.try_push(b"no")
    with pytest.raises(shmring.Error) as e:  # a view may still write the slot
        seg.producer()
    assert e.value.errc == "role_taken"
    slot.write(b"finished after close")
    slot.commit()
    tx2 = seg.producer()  # given back with the last slot
    assert seg.consumer().pop(timeout=1.0) == b"finished after close"
    tx2.close()


def test_exist_ok_opens_the_same_ring(name):
    seg = shmring.create(name, kind="mpmc", capacity=8, slot_size=32)
    again = shmring.create(name, kind="mpmc", capacity=8, slot_size=32, exist_ok=True)
    assert seg.created and not again.created
    again.producer().push(b"shared")
    assert seg.consumer().pop(timeout=1.0) == b"shared"
    with pytest.raises(shmring.ExistsError):
        shmring.create(name, kind="mpmc", capacity=8, slot_size=32)


def test_exist_ok_names_every_difference(name):
    shmring.create(name, kind="mpmc", capacity=8, slot_size=32)
    with pytest.raises(shmring.Error) as e:
        shmring.create(name, kind="mpmc", capacity=16, slot_size=64, exist_ok=True)
    assert e.value.errc == "geometry_mismatch"
    assert "capacity=8 (asked for 16)" in str(e.value)
    assert "slot_size=32 (asked for 64)" in str(e.value)
    with pytest.raises(shmring.Error, match=r"kind='mpmc' \(asked for 'spsc'\)") as e:
        shmring.create(name, kind="spsc", capacity=8, slot_size=32, exist_ok=True)
    assert e.value.errc == "kind_mismatch"


def test_exist_ok_with_unlink_on_close(name):
    shmring.create(name, capacity=4, slot_size=64)  # left over, say by a crashed run
    with shmring.create(name, capacity=4, slot_size=64, exist_ok=True,
                        unlink_on_close=True) as seg:
        assert not seg.created and seg.unlink_on_close
    assert not shm_exists(name)


@needs_numpy
def test_typed_segment_and_handles_are_context_managers(name):
    with shmring.create(name, capacity=4, dtype="float32", shape=(3,),
                        unlink_on_close=True) as seg:
        with seg.producer() as tx, seg.consumer() as rx:
            tx.push(np.arange(3, dtype="float32"))
            assert len(rx) == 1
            assert (rx.pop(timeout=1.0) == np.arange(3)).all()
        assert tx.closed and rx.closed
    assert not shm_exists(name)


# ---- pickling -------------------------------------------------------------------


def test_segment_pickles_by_name(name):
    seg = shmring.create(name, kind="mpmc", capacity=8, slot_size=48, unlink_on_close=True)
    copy = pickle.loads(pickle.dumps(seg))
    assert (copy.name, copy.kind, copy.capacity, copy.slot_size) == (name, "mpmc", 8, 48)
    assert not copy.created and not copy.unlink_on_close  # the copy is no owner
    copy.producer().push(b"through the copy")
    assert seg.consumer().pop(timeout=1.0) == b"through the copy"
    copy.close()
    assert shm_exists(name)


def test_unpickling_checks_the_geometry(name):
    data = pickle.dumps(shmring.create(name, capacity=8, slot_size=48))
    shmring.unlink(name)
    shmring.create(name, capacity=16, slot_size=48)  # the name now holds another ring
    with pytest.raises(shmring.Error, match=r"capacity=16 \(asked for 8\)"):
        pickle.loads(data)


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_handle_pickles_as_a_role_reference(name, kind):
    seg = shmring.create(name, kind=kind, capacity=4, slot_size=64)
    tx = seg.producer()
    ref = pickle.loads(pickle.dumps(tx))
    assert isinstance(ref, shmring.RoleRef) and ref == tx.ref() == seg.producer_ref()
    assert (ref.segment, ref.role, ref.kind) == (name, "producer", kind)
    with pytest.raises(AttributeError, match=r"ref\.attach\(\)"):
        ref.push(b"no role")
    if kind == "spsc":
        with pytest.raises(shmring.Error, match="close the handle") as e:
            ref.attach()  # tx still holds the one producer role
        assert e.value.errc == "role_taken"
        tx.close()
    with ref.attach() as tx2:
        tx2.push(b"attached")
    assert seg.consumer().pop(timeout=1.0) == b"attached"


@needs_numpy
def test_typed_refs_attach_typed_handles(name):
    seg = shmring.create(name, capacity=4, dtype="int16", shape=(2, 2))
    copy = pickle.loads(pickle.dumps(seg))
    assert copy.dtype == np.int16 and copy.shape == (2, 2)
    with pickle.loads(pickle.dumps(seg.consumer_ref())).attach() as rx:
        seg.producer().push(np.full((2, 2), 7, np.int16))
        assert (rx.pop(timeout=1.0) == 7).all()
        assert isinstance(pickle.loads(pickle.dumps(rx)), shmring.RoleRef)


def _produce(ref: shmring.RoleRef, seg: shmring.Segment, count: int, size: int) -> None:
    # A child: the segment reopened by name, the role attached here.
    assert seg.capacity == 16 and seg.slot_size == size
    with ref.attach() as tx:
        for seq in range(count):
            if seq % 2:
                tx.push(message(seq, size), timeout=30)
            else:
                with tx.claim(timeout=30) as slot:
                    slot.write(message(seq, size))


def _consume(ref: shmring.RoleRef, count: int, size: int, result) -> None:
    with ref.attach() as rx:
        ok = all(rx.pop(timeout=30) == message(seq, size) for seq in range(count))
    result.put(ok)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_refs_go_to_children_under_every_start_method(name, kind, method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    ctx = mp.get_context(method)
    count, size = 500, 96
    seg = shmring.create(name, kind=kind, capacity=16, slot_size=size)
    producer = ctx.Process(target=_produce, args=(seg.producer_ref(), seg, count, size))
    result = ctx.Queue()
    consumer = ctx.Process(target=_consume, args=(seg.consumer_ref(), count, size, result))
    producer.start()
    consumer.start()
    assert result.get(timeout=60) is True, "a message was lost, reordered or corrupt"
    for p in (producer, consumer):
        p.join(timeout=30)
        assert p.exitcode == 0
    # Nothing beyond the last message: the producer's exit ended the stream.
    with pytest.raises(shmring.EndOfStream):
        seg.consumer().try_pop()


def _pickled_error(errc_errno):
    raise shmring.NotFoundError("segment 'x': not there", errc="not_found", errno=errc_errno)


def test_exceptions_pickle_with_errc_and_errno(name):
    with pytest.raises(shmring.NotFoundError) as raised:
        shmring.open(name)
    for e in (raised.value, shmring.Error("m", errc="corrupt"),
              shmring.InvalidArgumentError("bad", errc="invalid_capacity")):
        copy = pickle.loads(pickle.dumps(e))
        assert type(copy) is type(e)
        assert (str(copy), copy.errc, copy.errno) == (str(e), e.errc, e.errno)
    assert pickle.loads(pickle.dumps(raised.value)).errno == errno.ENOENT
    # ... as a multiprocessing pool hands a worker's error back.
    with mp.get_context("spawn").Pool(1) as pool:
        with pytest.raises(shmring.NotFoundError) as e:
            pool.apply(_pickled_error, (errno.ENOENT,))
    assert (e.value.errc, e.value.errno) == ("not_found", errno.ENOENT)


# ---- a claim publishes what was written -----------------------------------------------


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_claim_publishes_only_what_was_written(name, kind):
    seg = shmring.create(name, kind=kind, capacity=1, slot_size=64)
    tx, rx = seg.producer(), seg.consumer()
    tx.push(b"an earlier, longer message")
    assert rx.pop(timeout=1.0) == b"an earlier, longer message"
    with tx.claim(timeout=1.0) as slot:
        assert slot.size is None
        slot.write(b"short")
        assert slot.size == 5
    assert rx.pop(timeout=1.0) == b"short"


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_a_view_written_claim_needs_a_size(name, kind):
    seg = shmring.create(name, kind=kind, capacity=1, slot_size=64)
    tx, rx = seg.producer(), seg.consumer()
    with pytest.raises(shmring.SizeNotSetError, match="slot.write") as e:
        with tx.claim(timeout=1.0) as slot:
            with memoryview(slot) as view:
                view[:5] = b"stale"
    assert isinstance(e.value, shmring.Error) and e.value.errc == "size_not_set"
    assert slot.finished and rx.try_pop() is None  # aborted: nothing was published
    slot = tx.claim(timeout=1.0)  # the only slot is free again
    with memoryview(slot) as view:
        view[:3] = b"abc"
    for finish in (slot.commit, slot.release):
        with pytest.raises(shmring.SizeNotSetError):
            finish()
    assert not slot.finished  # still held: the size can still be given
    slot.commit(3)
    assert rx.pop(timeout=1.0) == b"abc"
    with tx.claim(timeout=1.0) as slot:
        with memoryview(slot) as view:
            view[:2] = b"hi"
        slot.size = 2
    assert rx.pop(timeout=1.0) == b"hi"


@needs_numpy
def test_typed_claims_are_always_full(name):
    seg = shmring.create(name, capacity=2, dtype="uint8", shape=(4,))
    tx, rx = seg.producer(), seg.consumer()
    with tx.claim(timeout=1.0) as slot:
        assert slot.size == 4
        slot.array[:] = [1, 2, 3, 4]
    assert rx.pop(timeout=1.0).tolist() == [1, 2, 3, 4]


# ---- iteration and introspection ----------------------------------------------------


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_for_loop_over_a_consumer(name, kind):
    seg = shmring.create(name, kind=kind, capacity=4, slot_size=64)
    tx, rx = seg.producer(), seg.consumer()
    count = 200

    def produce():
        for seq in range(count):
            tx.push(message(seq, 32), timeout=30)
        tx.push(b"", timeout=30)  # the end, by the application's convention

    t = threading.Thread(target=produce)
    t.start()
    got = []
    for m in rx:  # waits for each message
        if m == b"":
            break
        got.append(m)
    t.join()
    assert got == [message(seq, 32) for seq in range(count)]
    assert list(rx.iter(timeout=0.01)) == []


@pytest.mark.parametrize("kind", ["spsc", "mpmc"])
def test_len_and_empty(name, kind):
    seg = shmring.create(name, kind=kind, capacity=4, slot_size=16)
    tx, rx = seg.producer(), seg.consumer()
    assert len(rx) == len(tx) == 0 and rx.empty() and tx.empty()
    assert rx and tx  # a handle is true even when its ring is empty
    for i in range(4):
        tx.push(bytes([i]))
    assert len(rx) == len(tx) == 4 and not rx.empty()
    assert not tx.try_push(b"full")
    rx.pop(timeout=1.0)
    assert len(rx) == 3
    with rx.peek(timeout=1.0):
        assert len(rx) == 3 if kind == "spsc" else len(rx) == 2  # MPMC: claimed on peek
    assert len(rx) == 2
    assert (tx.position, rx.position) == (4, 2)


def test_reprs(name):
    seg = shmring.create(name, capacity=8, slot_size=32, mode=0o640)
    assert seg.mode == 0o640
    tx, rx = seg.producer(), seg.consumer()
    tx.push(b"a")
    tx.push(b"b")
    rx.pop(timeout=1.0)
    assert repr(seg) == (f"<shmring.Segment '{name}' spsc capacity=8 slot_size=32 mode=0o640 "
                         f"head=2 tail=1>")
    assert repr(tx) == (f"<shmring.SpscProducer '{name}' capacity=8 slot_size=32 position=2 "
                        f"waiting=1>")
    assert repr(rx) == (f"<shmring.SpscConsumer '{name}' capacity=8 slot_size=32 position=1 "
                        f"waiting=1>")
    slot = tx.claim(timeout=1.0)
    assert repr(slot) == f"<shmring.Slot claimed from '{name}' position=2 size=None capacity=32>"
    slot.write(b"xyz")
    slot.commit()
    assert repr(slot).endswith("size=3 capacity=32 finished>")
    with rx.peek(timeout=1.0) as msg:
        assert repr(msg) == f"<shmring.Slot peeked from '{name}' position=1 size=1 capacity=1>"
    ref = seg.consumer_ref()
    assert repr(ref) == (f"<shmring.RoleRef consumer of '{name}' spsc capacity=8 slot_size=32 "
                         f"(not attached)>")


@pytest.mark.parametrize("kwargs,errc,what", [
    (dict(kind="fifo"), "invalid_argument",
     "kind must be 'spsc', 'mpmc' or 'broadcast', not 'fifo'"),
    (dict(capacity=-1), "invalid_capacity", "capacity must be a power of two >= 1, not -1"),
    (dict(capacity=3), "invalid_capacity", "capacity must be a power of two >= 1, not 3"),
    (dict(slot_size=0), "invalid_slot_size", "slot_size must be >= 1 byte, not 0"),
    (dict(mode=-1), "invalid_argument", "mode must be permission bits"),
    (dict(mode=0o10000), "invalid_argument", "not 0o10000"),
    (dict(slot_format="fast"), "invalid_slot_format", "slot_format must be 'plain' or"),
])
def test_bad_arguments_are_named(name, kwargs, errc, what):
    with pytest.raises(shmring.InvalidArgumentError) as e:
        shmring.create(name, **kwargs)
    assert e.value.errc == errc and what in str(e.value)
    assert not shm_exists(name)


def test_bad_argument_types_and_open_arguments(name):
    with pytest.raises(TypeError, match="capacity must be an int, not float"):
        shmring.create(name, capacity=1.5)
    with pytest.raises(TypeError, match="name must be a str"):
        shmring.create(42)
    shmring.create(name, capacity=2, slot_size=8)
    with pytest.raises(shmring.InvalidArgumentError, match="kind must be"):
        shmring.open(name, kind="SPSC")
    with pytest.raises(shmring.InvalidArgumentError, match="init_timeout must be >= 0"):
        shmring.open(name, init_timeout=-1)


def test_help_shows_the_mode_in_octal():
    default = inspect.signature(shmring.create).parameters["mode"].default
    assert default == 0o600 and repr(default) == "0o600"
    assert re.search(r"mode: '?int'? = 0o600", pydoc.render_doc(shmring.create))


def test_register_cuda_error_names_the_segment(name):
    if shmring.built_with_cuda() and shmring.gpu_count() > 0:
        pytest.skip("a CUDA device is visible: registration succeeds")
    seg = shmring.create(name, capacity=2, slot_size=64)
    with pytest.raises(shmring.Error) as e:
        seg.register_cuda()
    assert f"segment '{name}'" in str(e.value) and "(none)" not in str(e.value)
