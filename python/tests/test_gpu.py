"""GPU views of slots (__cuda_array_interface__ v3 and DLPack): CuPy and
PyTorch arrays on the slot itself. The device tests skip where no CUDA device
is visible (or the module was built without the CUDA toolkit); the error
paths run everywhere."""

from __future__ import annotations

import gc
import os
import uuid

import pytest

import shmring

np = pytest.importorskip("numpy")

needs_gpu = pytest.mark.skipif(
    not shmring.built_with_cuda() or shmring.gpu_count() == 0,
    reason="no CUDA device visible" if shmring.built_with_cuda()
    else "shmring was built without the CUDA toolkit")


@pytest.fixture
def name():
    n = f"shmring-pytest-gpu-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield n
    shmring.unlink(n, missing_ok=True)


def test_gpu_view_needs_a_registered_segment(name):
    seg = shmring.create(name, capacity=2, slot_size=64)
    assert seg.cuda_device is None
    with seg.producer().claim(timeout=1.0) as slot:
        with pytest.raises(shmring.Error, match="register") as e:
            slot.cuda()
        assert e.value.errc == ("gpu_not_allowed" if shmring.built_with_cuda() else "no_gpu")
        slot.abort()  # nothing was written


@pytest.mark.skipif(shmring.built_with_cuda() and shmring.gpu_count() > 0,
                    reason="a CUDA device is visible")
def test_register_without_a_device(name):
    seg = shmring.create(name, capacity=2, slot_size=64)
    with pytest.raises(shmring.Error) as e:
        seg.register_cuda()
    assert e.value.errc == "no_gpu"
    assert name in str(e.value)


@needs_gpu
def test_view_describes_the_slot(name):
    seg = shmring.create(name, capacity=2, dtype=np.float32, shape=(3, 5))
    seg.register_cuda(0)
    seg.register_cuda(0)  # again: nothing to do
    assert seg.cuda_device == 0
    tx = seg.producer()
    with tx.claim(timeout=1.0) as slot:
        view = slot.cuda()
        cai = view.__cuda_array_interface__
        assert cai["shape"] == (3, 5) and cai["typestr"] == "<f4" and cai["version"] == 3
        assert cai["data"] == (view.address, False) and cai["strides"] is None
        assert view.__dlpack_device__() == (2, 0) and view.shape == (3, 5) and not view.readonly
        host = slot.array
        # Registered host memory has one address on both sides (checked by
        # the registration on the H100/H200); the view is the slot itself.
        assert view.address == host.ctypes.data
        del host
        with pytest.raises(BufferError, match="zero-copy"):
            view.__dlpack__(copy=True)
        with pytest.raises(BufferError, match="cannot be exported"):
            view.__dlpack__(dl_device=(1, 0))
        capsule = view.__dlpack__()  # never consumed: its destructor gives the view back
        del capsule, view
    assert slot.finished


@needs_gpu
def test_cupy_aliases_the_slot(name):
    cp = pytest.importorskip("cupy")
    seg = shmring.create(name, kind="spsc", capacity=2, dtype=np.float32, shape=(256, 256))
    seg.register_cuda()
    tx, rx = seg.producer(), seg.consumer()
    slot = tx.claim(timeout=1.0)
    for gpu in (cp.asarray(slot.cuda()), cp.from_dlpack(slot.cuda())):
        assert gpu.data.ptr == slot.array.ctypes.data  # no copy: the same bytes
        gpu[...] = cp.arange(256 * 256, dtype=cp.float32).reshape(256, 256)  # GPU writes
        cp.cuda.runtime.deviceSynchronize()
        assert np.array_equal(slot.array, np.arange(256 * 256, dtype=np.float32).reshape(256, 256))
        slot.array[7, 9] = -1.0  # CPU writes, GPU reads
        assert float(gpu[7, 9]) == -1.0
        # Summed in float64 on both sides: exact for these integers (a float32
        # sum of 65,536 of them is not).
        assert float(gpu.sum(dtype=cp.float64)) == float(slot.array.astype(np.float64).sum())
    with pytest.raises(BufferError, match="still alive"):  # `gpu` still holds the slot
        slot.commit()
    assert rx.try_peek() is None
    del gpu
    gc.collect()
    assert slot.finished  # committed with the last view
    with rx.peek(timeout=1.0) as msg:  # a consumer on the GPU, read-only view
        view = msg.cuda()
        assert view.readonly and view.__cuda_array_interface__["data"][1] is True
        gpu = cp.asarray(view)
        assert gpu.data.ptr == msg.array.ctypes.data
        expected = np.arange(256 * 256, dtype=np.float32).reshape(256, 256)
        expected[7, 9] = -1.0
        assert cp.array_equal(gpu, cp.asarray(expected))
        del gpu, view


@needs_gpu
def test_torch_aliases_the_slot(name):
    torch = pytest.importorskip("torch")
    seg = shmring.create(name, kind="mpmc", capacity=2, dtype=np.uint8, shape=(480, 640, 3))
    seg.register_cuda()
    tx, rx = seg.producer(), seg.consumer()
    with tx.claim(timeout=1.0) as slot:
        for t in (torch.as_tensor(slot.cuda(), device="cuda"), torch.from_dlpack(slot.cuda())):
            assert t.is_cuda and t.shape == (480, 640, 3) and t.dtype == torch.uint8
            assert t.data_ptr() == slot.array.ctypes.data
            t.fill_(3)  # GPU writes
            torch.cuda.synchronize()
            assert np.all(slot.array == 3)
            slot.array[100, 200] = (1, 2, 3)  # CPU writes, GPU reads
            assert t[100, 200].tolist() == [1, 2, 3]
            del t
    with rx.peek(timeout=1.0) as msg:
        t = torch.from_dlpack(msg.cuda())
        assert t.data_ptr() == msg.array.ctypes.data
        assert int(t.sum()) == 3 * 480 * 640 * 3 - 9 + 6
        del t


@needs_gpu
def test_broadcast_subscribers_view_the_same_slot_on_the_gpu(name):
    cp = pytest.importorskip("cupy")
    seg = shmring.create(name, kind="broadcast", subscribers=2, capacity=4, dtype=np.float32,
                         shape=(128, 128))
    seg.register_cuda()
    subs = [seg.subscriber(), seg.subscriber()]
    tx = seg.producer()
    frame = np.arange(128 * 128, dtype=np.float32).reshape(128, 128)
    with tx.claim(timeout=1.0) as slot:
        gpu = cp.asarray(slot.cuda())
        gpu[...] = cp.asarray(frame)  # the frame is written by the GPU, in the slot
        cp.cuda.runtime.deviceSynchronize()
        del gpu
    addresses = []
    for s in subs:
        with s.peek(timeout=1.0) as msg:
            gpu = cp.from_dlpack(msg.cuda())
            assert gpu.data.ptr == msg.array.ctypes.data  # in place, for each subscriber
            assert cp.array_equal(gpu, cp.asarray(frame))
            addresses.append(gpu.data.ptr)
            del gpu
    assert addresses[0] == addresses[1]  # both read the one slot: nothing was copied
