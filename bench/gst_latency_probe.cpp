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
//   gst-latency-probe verify NAME PIPELINE...  measure, and the frames must be
//       stampsrc's, each once and in order (their numbers 0, 1, 2, ...): else
//       it says which came instead and exits 1
//   gst-latency-probe run PIPELINE...  the pipeline alone (for stampsrc); at
//       the end, one line "NAME frames F in-place P" for each element with
//       shmringsink's counters (frames written, and of those, drawn in a slot
//       of its pool: no copy)
//
// Every pipeline may use the element stampsrc, registered here: a source of
// raw video that, like a camera's DMA, costs the CPU nothing per frame but a
// header. It takes each buffer as any source does (the pool or allocator
// that downstream proposes: a transport's sink gets it to write frames into
// its shared memory), writes CLOCK_MONOTONIC (ns) into the first 8 bytes
// and the frame's number into the next 8, and pushes it. The rest of the
// frame is left as the memory had it. So frames per second and CPU per frame
// measure the transport, where videotestsrc's drawing of each frame (a 12 MB
// copy at 4K) would be most of both.
//
//   stampsrc caps=video/x-raw,format=I420,width=3840,height=2160,framerate=30/1
//            [num-buffers=N] [is-live=true: one frame per frame duration]
//
// The stamp travels in the frame itself, so every transport carries it the
// same way, whether it copies the frame or not. CLOCK_MONOTONIC is one
// clock for every process of the machine. Exits 0 at EOS, 1 on an error.
#include <gst/base/gstpushsrc.h>
#include <gst/gst.h>
#include <gst/video/video.h>
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

// stampsrc: a GstPushSrc; GstBaseSrc's own allocation (the pool or
// allocator downstream proposes) gives it the buffers it fills.
struct StampSrc {
  GstPushSrc parent;
  GstCaps* caps;  // the "caps" property: what it produces
  gsize frame_size;
  GstClockTime frame_duration;
  std::uint64_t frames;  // pushed so far: the next frame's number
};
struct StampSrcClass {
  GstPushSrcClass parent_class;
};

G_DEFINE_TYPE(StampSrc, stamp_src, GST_TYPE_PUSH_SRC)

enum { PROP_0, PROP_CAPS, PROP_IS_LIVE };

void stamp_src_set_property(GObject* object, guint id, const GValue* value, GParamSpec* pspec) {
  auto* self = reinterpret_cast<StampSrc*>(object);
  switch (id) {
    case PROP_CAPS:
      gst_caps_replace(&self->caps, const_cast<GstCaps*>(gst_value_get_caps(value)));
      break;
    case PROP_IS_LIVE:
      gst_base_src_set_live(GST_BASE_SRC(object), g_value_get_boolean(value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
}

void stamp_src_get_property(GObject* object, guint id, GValue* value, GParamSpec* pspec) {
  auto* self = reinterpret_cast<StampSrc*>(object);
  switch (id) {
    case PROP_CAPS:
      gst_value_set_caps(value, self->caps);
      break;
    case PROP_IS_LIVE:
      g_value_set_boolean(value, gst_base_src_is_live(GST_BASE_SRC(object)));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
}

void stamp_src_finalize(GObject* object) {
  gst_caps_replace(&reinterpret_cast<StampSrc*>(object)->caps, nullptr);
  G_OBJECT_CLASS(stamp_src_parent_class)->finalize(object);
}

gboolean stamp_src_start(GstBaseSrc* src) {
  auto* self = reinterpret_cast<StampSrc*>(src);
  if (self->caps == nullptr || !gst_caps_is_fixed(self->caps)) {
    GST_ELEMENT_ERROR(src, RESOURCE, SETTINGS,
                      ("stampsrc needs fixed raw video caps (the caps property)"), (nullptr));
    return FALSE;
  }
  self->frames = 0;
  return TRUE;
}

GstCaps* stamp_src_get_caps(GstBaseSrc* src, GstCaps* filter) {
  auto* self = reinterpret_cast<StampSrc*>(src);
  if (self->caps == nullptr) return gst_caps_new_any();
  return filter ? gst_caps_intersect_full(filter, self->caps, GST_CAPS_INTERSECT_FIRST)
                : gst_caps_ref(self->caps);
}

gboolean stamp_src_set_caps(GstBaseSrc* src, GstCaps* caps) {
  auto* self = reinterpret_cast<StampSrc*>(src);
  GstVideoInfo info;
  if (!gst_video_info_from_caps(&info, caps) || GST_VIDEO_INFO_FPS_N(&info) <= 0) {
    GST_ELEMENT_ERROR(src, RESOURCE, SETTINGS,
                      ("stampsrc: not raw video with a frame rate: %" GST_PTR_FORMAT, caps),
                      (nullptr));
    return FALSE;
  }
  self->frame_size = GST_VIDEO_INFO_SIZE(&info);
  self->frame_duration = gst_util_uint64_scale_int(GST_SECOND, GST_VIDEO_INFO_FPS_D(&info),
                                                   GST_VIDEO_INFO_FPS_N(&info));
  // Without a pool from downstream, GstBaseSrc allocates this much a buffer.
  gst_base_src_set_blocksize(src, static_cast<guint>(self->frame_size));
  return TRUE;
}

// Downstream's pool if it proposes one; else a pool of `kPoolFrames` frames
// from the allocator it proposes (shmsink's and unixfdsink's: their shared
// memory), as a camera has a fixed set of buffers: frames are reused, not
// allocated each time, and the source waits for one to come back when all
// are out. (Unbounded, the pool would keep every block of shmsink's area
// once it had made that many frames, and shmsink would then wait for room
// forever.) GstBaseSrc's default then configures and activates it.
constexpr guint kPoolFrames = 8;

gboolean stamp_src_decide_allocation(GstBaseSrc* src, GstQuery* query) {
  auto* self = reinterpret_cast<StampSrc*>(src);
  if (gst_query_get_n_allocation_pools(query) == 0) {
    GstBufferPool* pool = gst_buffer_pool_new();
    gst_query_add_allocation_pool(query, pool, static_cast<guint>(self->frame_size), 0,
                                  kPoolFrames);
    gst_object_unref(pool);
  }
  return GST_BASE_SRC_CLASS(stamp_src_parent_class)->decide_allocation(src, query);
}

GstFlowReturn stamp_src_fill(GstPushSrc* src, GstBuffer* buf) {
  auto* self = reinterpret_cast<StampSrc*>(src);
  GstMapInfo map;
  if (gst_buffer_get_size(buf) < 16 || !gst_buffer_map(buf, &map, GST_MAP_WRITE)) {
    GST_ELEMENT_ERROR(src, RESOURCE, WRITE, ("stampsrc: cannot write a frame's header"), (nullptr));
    return GST_FLOW_ERROR;
  }
  const std::uint64_t header[2] = {now_ns(), self->frames};
  std::memcpy(map.data, header, sizeof header);
  gst_buffer_unmap(buf, &map);
  GST_BUFFER_PTS(buf) = self->frames * self->frame_duration;
  GST_BUFFER_DURATION(buf) = self->frame_duration;
  GST_BUFFER_OFFSET(buf) = self->frames;
  GST_BUFFER_OFFSET_END(buf) = self->frames + 1;
  ++self->frames;
  return GST_FLOW_OK;
}

// Live: GstBaseSrc waits for each frame's time on the clock.
void stamp_src_get_times(GstBaseSrc* src, GstBuffer* buf, GstClockTime* start, GstClockTime* end) {
  *start = *end = GST_CLOCK_TIME_NONE;
  if (gst_base_src_is_live(src) && GST_BUFFER_PTS_IS_VALID(buf)) {
    *start = GST_BUFFER_PTS(buf);
    *end = *start + GST_BUFFER_DURATION(buf);
  }
}

void stamp_src_class_init(StampSrcClass* klass) {
  auto* gobject = G_OBJECT_CLASS(klass);
  gobject->set_property = stamp_src_set_property;
  gobject->get_property = stamp_src_get_property;
  gobject->finalize = stamp_src_finalize;
  g_object_class_install_property(
      gobject, PROP_CAPS,
      g_param_spec_boxed("caps", "Caps", "Raw video caps of the frames (fixed)", GST_TYPE_CAPS,
                         static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS)));
  g_object_class_install_property(
      gobject, PROP_IS_LIVE,
      g_param_spec_boolean("is-live", "Is live", "One frame per frame duration, by the clock",
                           FALSE,
                           static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS)));
  auto* element = GST_ELEMENT_CLASS(klass);
  static GstStaticPadTemplate src_template =
      GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS("video/x-raw"));
  gst_element_class_add_static_pad_template(element, &src_template);
  gst_element_class_set_static_metadata(element, "Stamp source", "Source/Video",
                                        "Raw video frames with only a time stamp written",
                                        "shmring");
  auto* base = GST_BASE_SRC_CLASS(klass);
  base->start = stamp_src_start;
  base->get_caps = stamp_src_get_caps;
  base->set_caps = stamp_src_set_caps;
  base->decide_allocation = stamp_src_decide_allocation;
  base->get_times = stamp_src_get_times;
  GST_PUSH_SRC_CLASS(klass)->fill = stamp_src_fill;
}

void stamp_src_init(StampSrc* self) {
  self->caps = nullptr;
  self->frame_size = 0;
  self->frame_duration = GST_CLOCK_TIME_NONE;
  self->frames = 0;
  gst_base_src_set_format(GST_BASE_SRC(self), GST_FORMAT_TIME);
}

struct Probe {
  bool stamp = false;
  bool verify = false;
  std::uint64_t unstamped = 0;  // buffers that could not be written (shared)
  std::vector<std::uint64_t> latencies;
  std::uint64_t next_frame = 0;  // verify: the frame number expected next
  std::uint64_t wrong = 0;       // verify: frames whose number was not that
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
    std::uint64_t frame = 0;
    if (probe->verify) {
      if (gst_buffer_extract(buf, 8, &frame, sizeof frame) != sizeof frame) frame = ~0ULL;
      if (frame != probe->next_frame && probe->wrong++ == 0) {
        std::fprintf(stderr, "frame %llu came where frame %llu was expected\n",
                     static_cast<unsigned long long>(frame),
                     static_cast<unsigned long long>(probe->next_frame));
      }
      probe->next_frame = frame + 1;
    }
  }
  return GST_PAD_PROBE_OK;
}

// run: "NAME frames F in-place P" for each element of `bin` that has
// shmringsink's counters (read before the pipeline stops: they are the run's).
void print_sink_counters(GstBin* bin) {
  GstIterator* it = gst_bin_iterate_recurse(bin);
  GValue item = G_VALUE_INIT;
  while (gst_iterator_next(it, &item) == GST_ITERATOR_OK) {
    auto* element = GST_ELEMENT(g_value_get_object(&item));
    if (g_object_class_find_property(G_OBJECT_GET_CLASS(element), "frames-in-place") != nullptr) {
      guint64 frames = 0;
      guint64 in_place = 0;
      g_object_get(element, "frames", &frames, "frames-in-place", &in_place, nullptr);
      gchar* name = gst_element_get_name(element);
      std::printf("%s frames %llu in-place %llu\n", name, static_cast<unsigned long long>(frames),
                  static_cast<unsigned long long>(in_place));
      g_free(name);
    }
    g_value_reset(&item);
  }
  g_value_unset(&item);
  gst_iterator_free(it);
}

}  // namespace

int main(int argc, char** argv) {
  gst_init(&argc, &argv);
  gst_element_register(nullptr, "stampsrc", GST_RANK_NONE, stamp_src_get_type());
  const bool run = argc >= 3 && std::strcmp(argv[1], "run") == 0;
  const bool probe_mode =
      argc >= 2 && (std::strcmp(argv[1], "stamp") == 0 || std::strcmp(argv[1], "measure") == 0 ||
                    std::strcmp(argv[1], "verify") == 0);
  if (!run && (argc < 4 || !probe_mode)) {
    std::fprintf(stderr,
                 "usage: %s stamp|measure|verify ELEMENT-NAME PIPELINE...\n"
                 "       %s run PIPELINE...\n",
                 argv[0], argv[0]);
    return 2;
  }
  Probe probe;
  probe.stamp = std::strcmp(argv[1], "stamp") == 0;
  probe.verify = std::strcmp(argv[1], "verify") == 0;
  const char* name = run ? nullptr : argv[2];
  std::string desc;
  for (int i = run ? 2 : 3; i < argc; ++i) (desc += argv[i]) += ' ';
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(desc.c_str(), &err);
  if (err != nullptr) {
    std::fprintf(stderr, "bad pipeline: %s\n", err->message);
    return 2;
  }
  if (!run) {
    GstElement* element = gst_bin_get_by_name(GST_BIN(pipeline), name);
    if (element == nullptr) {
      std::fprintf(stderr, "no element named '%s' in the pipeline\n", name);
      return 2;
    }
    GstPad* pad = gst_element_get_static_pad(element, "sink");
    gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, &probe, nullptr);
    gst_object_unref(pad);
    gst_object_unref(element);
  }

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
  if (run) print_sink_counters(GST_BIN(pipeline));
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
  if (probe.stamp) {
    if (probe.unstamped != 0) {
      std::fprintf(stderr, "%llu buffers were shared and not stamped\n",
                   static_cast<unsigned long long>(probe.unstamped));
    }
  } else if (!run) {
    std::printf("latency_ns %zu", probe.latencies.size());
    for (const std::uint64_t l : probe.latencies)
      std::printf(" %llu", static_cast<unsigned long long>(l));
    std::printf("\n");
  }
  if (probe.verify && probe.wrong != 0) {
    std::fprintf(stderr, "%llu of %zu frames were not the one expected\n",
                 static_cast<unsigned long long>(probe.wrong), probe.latencies.size());
    rc = 1;
  }
  return rc;
}
