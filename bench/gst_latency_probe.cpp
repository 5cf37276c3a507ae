// gst-latency-probe: runs one GStreamer pipeline, as gst-launch-1.0 would,
// with a probe that stamps or reads the time of each frame, for
// bench/gst_bench.py's latency from a sink to a source in another process.
//
//   gst-latency-probe stamp NAME PIPELINE...    before element NAME (the
//       transport's sink) gets a buffer, write CLOCK_MONOTONIC (ns) into its
//       first 8 bytes
//   gst-latency-probe measure NAME PIPELINE...  when element NAME (after the
//       transport's source) gets a buffer, read them back; at the end print
//       one line "latency_ns N v1 v2 ..." (the frames' latencies, in order)
//
// The stamp travels in the frame itself, so every transport carries it the
// same way, whether it copies the frame or not. CLOCK_MONOTONIC is one
// clock for every process of the machine. Exits 0 at EOS, 1 on an error.
#include <gst/gst.h>
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

struct Probe {
  bool stamp = false;
  std::uint64_t unstamped = 0;  // buffers that could not be written (shared)
  std::vector<std::uint64_t> latencies;
};

GstPadProbeReturn on_buffer(GstPad*, GstPadProbeInfo* info, gpointer data) {
  auto* probe = static_cast<Probe*>(data);
  GstBuffer* buf = GST_PAD_PROBE_INFO_BUFFER(info);
  if (buf == nullptr) return GST_PAD_PROBE_OK;
  if (probe->stamp) {
    // Written in place: the frame is not copied for it (a copy here would
    // change what the transport gets). A buffer shared elsewhere is left.
    GstMapInfo map;
    if (gst_buffer_get_size(buf) >= 8 && gst_buffer_is_writable(buf) &&
        gst_buffer_map(buf, &map, GST_MAP_WRITE)) {
      const std::uint64_t t = now_ns();
      std::memcpy(map.data, &t, sizeof t);
      gst_buffer_unmap(buf, &map);
    } else {
      ++probe->unstamped;
    }
  } else {
    std::uint64_t t = 0;
    if (gst_buffer_extract(buf, 0, &t, sizeof t) == sizeof t) {
      const std::uint64_t now = now_ns();
      probe->latencies.push_back(now >= t ? now - t : 0);
    }
  }
  return GST_PAD_PROBE_OK;
}

}  // namespace

int main(int argc, char** argv) {
  gst_init(&argc, &argv);
  if (argc < 4 || (std::strcmp(argv[1], "stamp") != 0 && std::strcmp(argv[1], "measure") != 0)) {
    std::fprintf(stderr, "usage: %s stamp|measure ELEMENT-NAME PIPELINE...\n", argv[0]);
    return 2;
  }
  Probe probe;
  probe.stamp = std::strcmp(argv[1], "stamp") == 0;
  const char* name = argv[2];
  std::string desc;
  for (int i = 3; i < argc; ++i) (desc += argv[i]) += ' ';
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(desc.c_str(), &err);
  if (err != nullptr) {
    std::fprintf(stderr, "bad pipeline: %s\n", err->message);
    return 2;
  }
  GstElement* element = gst_bin_get_by_name(GST_BIN(pipeline), name);
  if (element == nullptr) {
    std::fprintf(stderr, "no element named '%s' in the pipeline\n", name);
    return 2;
  }
  GstPad* pad = gst_element_get_static_pad(element, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, &probe, nullptr);
  gst_object_unref(pad);
  gst_object_unref(element);

  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstBus* bus = gst_element_get_bus(pipeline);
  GstMessage* m = gst_bus_timed_pop_filtered(
      bus, GST_CLOCK_TIME_NONE, static_cast<GstMessageType>(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  int rc = 0;
  if (GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR) {
    GError* e = nullptr;
    gchar* dbg = nullptr;
    gst_message_parse_error(m, &e, &dbg);
    std::fprintf(stderr, "error: %s (%s)\n", e->message, dbg ? dbg : "");
    g_error_free(e);
    g_free(dbg);
    rc = 1;
  }
  gst_message_unref(m);
  gst_object_unref(bus);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
  if (probe.stamp) {
    if (probe.unstamped != 0) {
      std::fprintf(stderr, "%llu buffers were shared and not stamped\n",
                   static_cast<unsigned long long>(probe.unstamped));
    }
  } else {
    std::printf("latency_ns %zu", probe.latencies.size());
    for (const std::uint64_t l : probe.latencies)
      std::printf(" %llu", static_cast<unsigned long long>(l));
    std::printf("\n");
  }
  return rc;
}
