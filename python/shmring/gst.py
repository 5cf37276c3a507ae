"""Frames that the GStreamer element ``shmringsink`` writes, for Python readers.

``shmringsink`` (the GStreamer plugin in ``gst/``) writes each buffer into a
broadcast ring, one per slot, behind a 64-byte header, and stores the
stream's caps in the segment's metadata (docs/gstreamer.md has the layout).
:func:`frames` subscribes to such a ring and yields :class:`Frame` objects
whose ``data`` is a numpy array of the frame, shaped from the caps, with the
timestamps the pipeline gave it::

    import shmring.gst

    for frame in shmring.gst.frames("cam", timeout=5):
        print(frame.frame, frame.pts, frame.data.shape)   # (720, 1280, 3) for RGB 720p

In a reliable ring the array is the slot itself (no copy), valid until the
iteration moves on (or ``frame.release()``): copy it to keep it. A lossy ring
may rewrite a slot while it is read, so its frames are copies, checked
against a rewrite while copied (never torn).

numpy is needed (imported when this module is).
"""

from __future__ import annotations

import contextlib
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import shmring

__all__ = ["Caps", "Frame", "HEADER_SIZE", "checksum", "create", "frames", "header", "pack",
           "parse_caps", "read_caps"]

METADATA_PREFIX = b"shmring.gst 1\n"
SLOT_MAGIC = 0x54534753
HEADER_SIZE = 64
HAS_CHECKSUM = 1
# A skip slot: no frame; the sink publishes one where it cannot write a frame
# in position order (a buffer of its pool rendered out of turn). Readers pass
# over it, and its position is no frame missed.
SKIP = 2
NO_TIME = (1 << 64) - 1
# magic, header_size, version, header_flags, pts, dts, duration, frame, offset,
# buffer_flags, size, checksum (gst/slot_format.hpp, SlotHeader)
_HEADER = struct.Struct("<IHBBQQQQQIIQ")
assert _HEADER.size == HEADER_SIZE

# Packed raw-video formats: bytes per pixel as (dtype, channels).
_PACKED: dict[str, tuple[str, int]] = {
    "GRAY8": ("u1", 1), "GRAY16_LE": ("<u2", 1), "GRAY16_BE": (">u2", 1),
    "RGB": ("u1", 3), "BGR": ("u1", 3),
    "RGBA": ("u1", 4), "BGRA": ("u1", 4), "ARGB": ("u1", 4), "ABGR": ("u1", 4),
    "RGBx": ("u1", 4), "BGRx": ("u1", 4), "xRGB": ("u1", 4), "xBGR": ("u1", 4),
    "YUY2": ("u1", 2), "UYVY": ("u1", 2), "YVYU": ("u1", 2),
}

_RELEASED = np.empty(0, dtype=np.uint8)  # a released frame's data

_FIELD = re.compile(r'\s*([A-Za-z][\w-]*)\s*=\s*(?:\(([\w-]+)\))?\s*("(?:[^"\\]|\\.)*"|[^,]*)')


@dataclass(frozen=True)
class Caps:
    """The stream's caps, as stored by the sink: the media type and its fields."""

    text: str
    media: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int | None:
        return self.fields.get("width")

    @property
    def height(self) -> int | None:
        return self.fields.get("height")

    @property
    def format(self) -> str | None:
        return self.fields.get("format")

    def layout(self) -> tuple[np.dtype, tuple[int, ...], tuple[int, ...]] | None:
        """dtype, shape and strides of one frame, for packed raw video.

        Rows are padded to 4 bytes as GStreamer lays them out by default
        (``GST_ROUND_UP_4(width * bytes per pixel)``). None for other caps
        (planar video such as I420 or NV12, or not video at all): frames are
        then flat uint8 arrays.
        """
        if self.media != "video/x-raw" or self.format not in _PACKED:
            return None
        if self.width is None or self.height is None:
            return None
        code, channels = _PACKED[self.format]
        dtype = np.dtype(code)
        row = (self.width * channels * dtype.itemsize + 3) // 4 * 4
        if channels == 1:
            return dtype, (self.height, self.width), (row, dtype.itemsize)
        return (dtype, (self.height, self.width, channels),
                (row, channels * dtype.itemsize, dtype.itemsize))


def _value(kind: str | None, raw: str) -> Any:
    raw = raw.strip()
    if raw.startswith('"') and raw.endswith('"'):
        return raw[1:-1].encode().decode("unicode_escape")
    if kind in ("int", "i", "uint"):
        return int(raw)
    if kind in ("double", "float", "d", "f"):
        return float(raw)
    if kind in ("boolean", "bool", "b"):
        return raw.lower() in ("true", "1", "yes", "t")
    if kind in ("fraction",):
        num, _, den = raw.partition("/")
        return (int(num), int(den or 1))
    return raw


def parse_caps(text: str) -> Caps:
    """Parses a fixed caps string (``gst_caps_to_string``) into :class:`Caps`.

    Raises ValueError naming the part that does not parse.
    """
    media, _, rest = text.partition(",")
    media = media.strip()
    if not media or "/" not in media:
        raise ValueError(f"caps {text!r}: no media type (like video/x-raw) at the start")
    fields: dict[str, Any] = {}
    pos = 0
    while pos < len(rest):
        m = _FIELD.match(rest, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"caps {text!r}: cannot parse the field at {rest[pos:]!r}")
        fields[m.group(1)] = _value(m.group(2), m.group(3))
        pos = m.end()
        while pos < len(rest) and rest[pos] in ", ":
            pos += 1
    return Caps(text, media, fields)


def read_caps(segment: Any) -> Caps:
    """The caps a sink stored in ``segment`` (an open :class:`shmring.Segment`).

    Raises shmring.Error if the segment was not made by shmringsink.
    """
    meta = bytes(segment.metadata)
    if not meta.startswith(METADATA_PREFIX):
        raise shmring.Error(f"segment '{segment.name}' holds no caps: it was not made by "
                            "shmringsink")
    return parse_caps(meta[len(METADATA_PREFIX):].decode())


def checksum(data: Any) -> int:
    """The slot header's checksum of ``data`` (gst/slot_format.hpp).

    The sum of the little-endian 64-bit words (the last zero-padded) times
    1, 3, 5, ..., modulo 2**64.
    """
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    pad = (-raw.size) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros(pad, dtype=np.uint8)])
    words = raw.view("<u8")
    odd = np.arange(1, 2 * words.size, 2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return int(np.sum(words * odd, dtype=np.uint64))


def create(name: str, caps: str, frame_size: int, slots: int = 8, subscribers: int = 4,
           delivery: str = "reliable", unlink_on_close: bool = False) -> Any:
    """Creates a ring as shmringsink makes it, for a Python producer.

    ``caps``: the stream's caps string (what shmringsrc will set); slots of
    HEADER_SIZE + ``frame_size`` bytes. Write frames with
    ``seg.producer().push(pack(data, frame=n, pts=...))`` and end the stream
    with ``end_stream()``; a shmringsrc pipeline reads them.
    """
    from . import _lifetimes, _shmring

    _lifetimes.check_name(name)
    slot = (HEADER_SIZE + frame_size + 63) // 64 * 64
    capacity, slot, mode = _lifetimes.check_create_args("broadcast", slots, slot,
                                                        _lifetimes.DEFAULT_MODE, "plain")
    subs, deliv = _lifetimes.check_broadcast_args("broadcast", subscribers, delivery)
    return _shmring.create(name, "broadcast", capacity, slot, mode, "plain", unlink_on_close,
                           METADATA_PREFIX + caps.encode(), subs, deliv)


def header(frame: int, size: int, pts: int | None = None, dts: int | None = None,
           duration: int | None = None, flags: int = 0, checksum: int | None = None,
           skip: bool = False) -> bytes:
    """The 64-byte slot header of a frame of ``size`` bytes at ring position
    ``frame`` (``checksum``: the frame's, stored when given; ``skip``: a skip
    slot, no frame, ``size`` 0). A producer that writes a slot in place puts
    this in front of the frame."""
    if skip and size != 0:
        raise ValueError(f"a skip slot holds no frame: size must be 0, not {size}")
    hflags = (HAS_CHECKSUM if checksum is not None else 0) | (SKIP if skip else 0)
    return _HEADER.pack(SLOT_MAGIC, HEADER_SIZE, 1, hflags,
                        NO_TIME if pts is None else pts, NO_TIME if dts is None else dts,
                        NO_TIME if duration is None else duration, frame,
                        NO_TIME if skip else frame, flags, size,
                        0 if checksum is None else checksum)


def pack(data: Any, frame: int, pts: int | None = None, dts: int | None = None,
         duration: int | None = None, flags: int = 0, with_checksum: bool = False) -> bytes:
    """One message as shmringsink writes it: the slot header, then ``data``."""
    payload = memoryview(data).cast("B").tobytes()
    return header(frame, len(payload), pts, dts, duration, flags,
                  checksum(payload) if with_checksum else None) + payload


def _time(t: int) -> int | None:
    return None if t == NO_TIME else t


@dataclass
class Frame:
    """One buffer of the stream: its data and what its slot header says.

    Times are nanoseconds (None where the pipeline set none); ``frame`` is
    the frame's position in the ring, 0, 1, ... (a gap means frames were
    missed), ``offset`` the
    buffer offset upstream set, ``flags`` the GstBufferFlags, ``checksum`` the
    sink's checksum (None unless the sink ran with checksum=true).
    """

    data: np.ndarray
    pts: int | None
    dts: int | None
    duration: int | None
    frame: int
    offset: int
    flags: int
    checksum: int | None
    slot: Any = None  # the lent slot (shmring.Slot) of a reliable ring, else None
    # The frame's bytes as stored (flat uint8, row padding included).
    payload: np.ndarray = field(default_factory=lambda: _RELEASED)

    def release(self) -> None:
        """Hands a lent slot back now; ``data`` becomes an empty array.

        The ring gets the slot back once no array made from it lives any
        more (one kept elsewhere holds it, and the next frame waits for it).
        """
        if self.slot is not None:
            self.data = self.payload = _RELEASED
            self.slot.release()
            self.slot = None

    def verify(self) -> bool:
        """Whether the data matches the sink's checksum (True if none was stored)."""
        return self.checksum is None or checksum(self.payload) == self.checksum


def _frame(buf: Any, caps: Caps, slot: Any) -> Frame | None:
    """The frame in a slot, or None for a skip slot."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    if raw.size < HEADER_SIZE:
        raise shmring.Error(f"a slot of {raw.size} bytes holds no shmringsink header")
    (magic, header_size, _version, hflags, pts, dts, duration, number, offset, flags, size,
     sum_) = _HEADER.unpack_from(raw[:HEADER_SIZE].tobytes())
    if magic != SLOT_MAGIC or header_size != HEADER_SIZE or size != raw.size - HEADER_SIZE:
        raise shmring.Error(f"a slot is not a shmringsink frame (magic {magic:#x}, "
                            f"{raw.size} bytes, header says {size})")
    if hflags & SKIP:
        return None
    payload = raw[HEADER_SIZE:]
    layout = caps.layout()
    data = payload
    if layout is not None:
        dtype, shape, strides = layout
        needed = strides[0] * shape[0]
        if payload.size >= needed:
            data = np.ndarray(shape, dtype=dtype, buffer=payload, strides=strides)
    return Frame(data, _time(pts), _time(dts), _time(duration), number, offset, flags,
                 sum_ if hflags & HAS_CHECKSUM else None, slot, payload)


def _open_when_there(name: str, timeout: float | None) -> Any:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return shmring.open(name, kind="broadcast")
        except shmring.NotFoundError:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"ring '{name}' did not appear within {timeout} s") from None
            time.sleep(0.005)  # the sink has not made it yet


def frames(name: str, timeout: float | None = None, at: str = "next",
           register_cuda: bool = False,
           subscribed: Callable[[], None] | None = None) -> Iterator[Frame]:
    """Subscribes to ring ``name`` and yields its frames until the producer ends.

    ``timeout``: seconds to wait for the ring to appear (a sink makes it when
    its caps are known) and for each frame (None: forever); past it,
    TimeoutError. ``at``: where to join ("next", "oldest", "newest").
    Ends when the producer ends the stream (shmringsink at EOS); raises
    shmring.PeerDeadError if the producer died. A reliable ring's frames are
    the slots in place, valid until the next frame is asked for; a lossy
    ring's are checked copies. ``register_cuda``: register the segment with
    CUDA in this process, so that ``frame.slot.cuda()`` is a GPU view of a
    reliable ring's slot (header included: the frame starts at HEADER_SIZE).
    ``subscribed``: called once the subscription is made, before the first
    frame is waited for (a producer started there misses no frame with
    ``at="next"``).
    """
    seg = _open_when_there(name, timeout)
    try:
        if register_cuda:
            seg.register_cuda()
        caps = read_caps(seg)
        sub = seg.subscriber(at=at)
        lossy = seg.delivery == "lossy"
        try:
            if subscribed is not None:
                subscribed()
            while True:
                try:
                    if lossy:
                        frame = _frame(sub.pop(timeout=timeout), caps, None)
                    else:
                        slot = sub.peek(timeout=timeout)
                        frame = _frame(slot, caps, slot)
                        if frame is None:
                            slot.release()
                except shmring.EndOfStream:
                    return
                if frame is None:
                    continue
                try:
                    yield frame
                except GeneratorExit:
                    # The caller stopped: the slot goes back when its last
                    # view does, or with the subscriber.
                    with contextlib.suppress(BufferError):
                        frame.release()
                    raise
                try:
                    frame.release()
                except BufferError as e:
                    raise shmring.Error(
                        f"frame {frame.frame} of "
                        f"ring '{name}' is still in use (an array made from it lives): its slot "
                        "cannot go back to the ring; copy what you keep, and drop views "
                        "before the next frame") from e
        finally:
            sub.close()
    finally:
        seg.close()
