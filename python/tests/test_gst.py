"""shmring.gst: frames of a ring in shmringsink's layout, as numpy arrays.

The first tests write rings the way the sink does (gst/slot_format.hpp), so
they need no GStreamer; the last runs the real shmringsink in gst-launch-1.0
(skipped where the plugin is not found: GST_PLUGIN_PATH, as ctest sets it)
and checks every frame against the checksum the sink computed in C++.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid

import pytest

np = pytest.importorskip("numpy")
import shmring  # noqa: E402
import shmring.gst as sg  # noqa: E402

CAPS = ("video/x-raw, format=(string)RGB, width=(int)5, height=(int)3, "
        "framerate=(fraction)30/1, colorimetry=(string)\"bt601\"")


@pytest.fixture
def name():
    n = f"shmring-pytest-gst-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield n
    shmring.unlink(n, missing_ok=True)


def test_parse_caps_and_layout():
    caps = sg.parse_caps(CAPS)
    assert caps.media == "video/x-raw"
    assert (caps.format, caps.width, caps.height) == ("RGB", 5, 3)
    assert caps.fields["framerate"] == (30, 1)
    assert caps.fields["colorimetry"] == "bt601"
    dtype, shape, strides = caps.layout()
    # 5 RGB pixels are 15 bytes; GStreamer pads rows to 16.
    assert (dtype, shape, strides) == (np.dtype("u1"), (3, 5, 3), (16, 3, 1))
    assert sg.parse_caps("video/x-raw, format=(string)I420, width=(int)4, height=(int)4").layout() is None
    with pytest.raises(ValueError, match="media type"):
        sg.parse_caps("width=(int)3")


def test_checksum_matches_the_sinks_definition():
    data = bytes(range(1, 20))  # 19 bytes: two words and a padded tail
    words = [int.from_bytes(data[i:i + 8].ljust(8, b"\0"), "little") for i in range(0, 24, 8)]
    want = sum(w * (2 * i + 1) for i, w in enumerate(words)) % (1 << 64)
    assert sg.checksum(data) == want
    assert sg.checksum(b"\xff" * 64) == sum(((1 << 64) - 1) * (2 * i + 1) for i in range(8)) % (1 << 64)


@pytest.mark.parametrize("delivery", ["reliable", "lossy"])
def test_frames_are_shaped_stamped_and_end_with_the_stream(name, delivery):
    frame_bytes = 16 * 3
    with sg.create(name, CAPS, frame_bytes, slots=8, subscribers=1, delivery=delivery) as seg:
        # Fewer frames than slots, then the end: a reader joining at "oldest"
        # afterwards finds them all, whatever the delivery.
        with seg.producer() as producer:
            for i in range(5):
                payload = bytearray(frame_bytes)
                payload[2 * 16 + 4 * 3: 2 * 16 + 4 * 3 + 3] = bytes([i, i + 1, i + 2])
                producer.push(sg.pack(payload, frame=i, pts=None if i == 4 else i * 1000,
                                      with_checksum=True), timeout=10)
            producer.end_stream()
            got = []
            for f in sg.frames(name, timeout=10, at="oldest"):
                assert f.verify()
                got.append((f.frame, f.pts, f.data.shape, f.data[2, 4].tolist()))
    assert got == [(i, None if i == 4 else i * 1000, (3, 5, 3), [i, i + 1, i + 2]) for i in range(5)]


@pytest.mark.parametrize("delivery", ["reliable", "lossy"])
def test_skip_slots_are_passed_over(name, delivery):
    frame_bytes = 16 * 3
    # A skip slot as the sink writes it (docs/gstreamer.md): header only,
    # header flag SKIP, size 0, its position as frame number.
    assert sg.header(7, 0, skip=True)[7] == sg.SKIP
    with pytest.raises(ValueError, match="size must be 0"):
        sg.header(7, 10, skip=True)
    with sg.create(name, CAPS, frame_bytes, slots=8, subscribers=1, delivery=delivery) as seg:
        with seg.producer() as producer:
            for i in range(6):
                if i in (0, 3):
                    producer.push(sg.header(i, 0, skip=True), timeout=10)
                else:
                    producer.push(sg.pack(bytes([i]) * frame_bytes, frame=i, pts=i,
                                          with_checksum=True), timeout=10)
            producer.end_stream()
            got = [(f.frame, f.pts, int(f.payload[0])) for f in sg.frames(name, timeout=10,
                                                                          at="oldest")]
    assert got == [(i, i, i) for i in (1, 2, 4, 5)]


def test_a_frame_kept_past_its_turn_is_a_clear_error(name):
    with sg.create(name, CAPS, 48, slots=4, subscribers=1) as seg, seg.producer() as producer:
        for i in range(2):
            producer.push(sg.pack(bytes(48), frame=i), timeout=10)
        it = sg.frames(name, timeout=10, at="oldest")
        kept = next(it).data  # a view of the slot, alive past the frame's turn
        with pytest.raises(shmring.Error, match="still in use"):
            next(it)
        del kept


def test_a_ring_not_made_by_the_sink_is_refused(name):
    with shmring.create(name, kind="broadcast", subscribers=1, capacity=2, slot_size=128,
                        unlink_on_close=True):
        with pytest.raises(shmring.Error, match="not made by shmringsink"):
            next(sg.frames(name, timeout=1))


def gst_plugin_found() -> bool:
    if shutil.which("gst-inspect-1.0") is None:
        return False
    r = subprocess.run(["gst-inspect-1.0", "shmringsink"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not gst_plugin_found(),
                    reason="gst-launch-1.0 or the shmring plugin not found (set GST_PLUGIN_PATH)")
def test_frames_from_shmringsink_match_its_checksums(name):
    frames_n = 20
    got = []

    def read():
        for f in sg.frames(name, timeout=20):
            assert f.checksum is not None and f.verify(), f"frame {f.frame} does not match"
            got.append((f.frame, f.data.shape, f.pts))

    # The reader must be subscribed before the first frame: the sink waits
    # for one subscriber (wait-subscribers=1), the reader waits for the ring.
    reader = threading.Thread(target=read)
    sink = subprocess.Popen(
        ["gst-launch-1.0", "-q", "videotestsrc", "pattern=ball", f"num-buffers={frames_n}", "!",
         "video/x-raw,format=RGB,width=90,height=30,framerate=30/1", "!", "shmringsink",
         f"ring={name}", "mode=reliable", "checksum=true", "wait-subscribers=1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = 200
        while not os.path.exists(f"/dev/shm/{name}") and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        reader.start()
        reader.join(30)
        assert sink.wait(30) == 0, sink.stdout.read()
    finally:
        sink.kill()
    assert not reader.is_alive()
    assert got == [(i, (30, 90, 3), i * 1_000_000_000 // 30) for i in range(frames_n)]


@pytest.mark.skipif(not gst_plugin_found(),
                    reason="gst-launch-1.0 or the shmring plugin not found (set GST_PLUGIN_PATH)")
def test_a_python_producer_feeds_shmringsrc(name):
    caps = "video/x-raw, format=(string)GRAY8, width=(int)8, height=(int)2, framerate=(fraction)10/1"
    with sg.create(name, caps, 16, slots=8, subscribers=1) as seg, seg.producer() as producer:
        for i in range(5):
            producer.push(sg.pack(bytes([i]) * 16, frame=i, pts=i * 100_000_000), timeout=10)
        producer.end_stream()
        # The source sets the ring's caps (the capsfilter refuses others),
        # reads the five frames and ends with EOS.
        r = subprocess.run(
            ["gst-launch-1.0", "shmringsrc", f"ring={name}", "join=oldest", "timeout=10000000000",
             "!", "video/x-raw,format=GRAY8,width=8,height=2", "!", "fakesink", "silent=false", "-v"],
            capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    chains = [line for line in r.stdout.splitlines() if "chain" in line]
    assert len(chains) == 5, r.stdout
    assert "offset: 4" in chains[-1] and "pts: 0:00:00.400000000" in chains[-1], chains[-1]
