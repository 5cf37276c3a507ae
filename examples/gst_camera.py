#!/usr/bin/env python3
"""Frames of a GStreamer pipeline into PyTorch or CuPy, without a copy.

A pipeline writes its frames into a broadcast ring with shmringsink:

    export GST_PLUGIN_PATH=$PWD/build/gst/plugins
    gst-launch-1.0 videotestsrc is-live=true ! video/x-raw,width=1280,height=720,format=RGB \\
        ! shmringsink ring=cam mode=reliable

and this script reads them (shmring.gst.frames), handing each one on:

- to PyTorch on the CPU through DLPack: a tensor on the ring's slot itself;
- with --gpu (PyTorch or CuPy, and the segment registered with CUDA): a CUDA
  array on the same bytes (slot.cuda(), mapped pinned memory) that the GPU
  reads across the bus, still without a copy;
- to numpy alone where neither library is installed.

A recorder may read the same ring at the same time:

    gst-launch-1.0 -e shmringsrc ring=cam ! videoconvert ! jpegenc ! avimux \\
        ! filesink location=cam.avi

    python3 examples/gst_camera.py --ring cam --frames 300
    python3 examples/gst_camera.py --ring cam --gpu torch

A lossy ring (the sink's default for a live source) hands copies: its slots
may be rewritten while read. Exit status: 0, or 3 when no frame came for
--timeout seconds.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import Any

import numpy as np

import shmring
import shmring.gst


def load(name: str) -> Any:
    """The module, or None where it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def on_cpu(torch: Any, data: np.ndarray) -> Any:
    """A tensor on the frame's bytes (DLPack), or the numpy array itself."""
    if torch is None:
        return data
    try:
        return torch.from_dlpack(data)
    except (BufferError, RuntimeError, TypeError):
        # A read-only array (a slot lent in place) is refused by DLPack
        # versions without a read-only flag: share the memory through numpy.
        return torch.from_numpy(np.asarray(data))


def on_gpu(lib_name: str, lib: Any, frame: shmring.gst.Frame) -> Any:
    """A CUDA array on the frame's slot (header excluded), shaped as the frame."""
    view = frame.slot.cuda()  # the whole message: header + frame
    whole = lib.from_dlpack(view) if lib_name == "torch" else lib.asarray(view)
    flat = whole[shmring.gst.HEADER_SIZE:]
    shape = frame.data.shape
    if flat.shape[0] == frame.data.nbytes:
        return flat.reshape(shape)
    return flat  # rows padded: left flat (strides in frame.data.strides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ring", default="cam")
    p.add_argument("--frames", type=int, default=0, help="stop after this many (0: until the end)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each frame")
    p.add_argument("--gpu", choices=["none", "torch", "cupy"], default="none")
    args = p.parse_args(argv)

    gpu = load(args.gpu) if args.gpu != "none" else None
    if args.gpu != "none" and gpu is None:
        print(f"{args.gpu} is not installed; reading on the CPU", file=sys.stderr)
    torch = load("torch")
    n = missed = 0
    last = -1
    start = time.monotonic()
    try:
        for frame in shmring.gst.frames(args.ring, timeout=args.timeout,
                                        register_cuda=gpu is not None):
            if gpu is not None and frame.slot is not None:
                array = on_gpu(args.gpu, gpu, frame)
                where = f"{args.gpu} (cuda)"
            else:
                array = on_cpu(torch, frame.data)
                where = "torch" if torch is not None else "numpy"
            if last >= 0:
                missed += frame.frame - last - 1
            last = frame.frame
            n += 1
            if n == 1:
                print(f"first frame: {tuple(frame.data.shape)} {frame.data.dtype} as {where} "
                      f"{type(array).__name__}, pts {frame.pts}")
            # A frame's slot goes back to the ring when the next one is asked
            # for: no array on it may live on (copy what you keep).
            del array
            if args.frames and n >= args.frames:
                break
    except TimeoutError:
        print(f"no frame for {args.timeout} s", file=sys.stderr)
        return 3
    seconds = time.monotonic() - start
    print(f"{n} frames in {seconds:.2f} s ({n / seconds if seconds else 0:.1f} fps), "
          f"{missed} missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
