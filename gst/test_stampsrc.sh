#!/usr/bin/env bash
# bench/gst_bench.py's camera-like source through shmringsink/shmringsrc:
# stampsrc takes its buffers from the sink's pool, so every frame but the
# first (the ring is made with it) is written in its slot, never copied;
# and the source gets every frame once, in order (stampsrc numbers them).
#
#   gst/test_stampsrc.sh PATH/TO/gst-latency-probe   (GST_PLUGIN_PATH set)
set -euo pipefail
probe=${1:?usage: $0 PATH/TO/gst-latency-probe}
frames=300
ring=shmring-test-stampsrc-$$
caps=video/x-raw,format=I420,width=1280,height=720,framerate=30/1
out=$(mktemp -d)
trap 'rm -rf "$out"; rm -f "/dev/shm/$ring"' EXIT

# The sink waits for the source, which waits up to 30 s for the ring.
timeout 60 "$probe" run stampsrc "caps=$caps" num-buffers=$frames \
  ! shmringsink name=sink "ring=$ring" mode=reliable slots=4 wait-subscribers=1 \
  >"$out/producer" &
producer=$!
status=0
timeout 60 "$probe" verify out shmringsrc "ring=$ring" num-buffers=$frames \
  timeout=30000000000 ! fakesink name=out >"$out/consumer" || status=$?
wait $producer || {
  echo "producer failed ($?)" >&2
  exit 1
}
if [[ $status != 0 ]]; then
  echo "consumer failed ($status): frames lost, repeated or out of order (above)" >&2
  exit 1
fi
read -r word count _ <"$out/consumer"
if [[ $word != latency_ns || $count != "$frames" ]]; then
  echo "consumer got $count frames, not $frames: $(head -c 200 "$out/consumer")" >&2
  exit 1
fi
expected="sink frames $frames in-place $((frames - 1))"
if [[ $(cat "$out/producer") != "$expected" ]]; then
  echo "producer: '$(cat "$out/producer")', not '$expected' (frames copied into the ring)" >&2
  exit 1
fi
echo "$frames frames, in order; $((frames - 1)) written in their slots"
