#include "gstshmringsrc.hpp"

#include <gst/video/video.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>

#include "shmring/broadcast_ring.hpp"
#include "shmring/error.hpp"
#include "shmring/segment.hpp"
#include "slot_format.hpp"

GST_DEBUG_CATEGORY_STATIC(shmring_src_debug);
#define GST_CAT_DEFAULT shmring_src_debug

namespace {

using namespace std::chrono_literals;
namespace sg = shmring::gst;
constexpr std::size_t kHeader = sizeof(sg::SlotHeader);

// Waits are cut into slices this long, so that unlock() (a flush, a state
// change) is seen within one of them.
constexpr auto kWaitSlice = 20ms;

// The slots a zero-copy source lends downstream, in place.
//
// A subscriber reads in order and releases in order, and holds one peek at a
// time. So the source keeps one claim (a window of consecutive slots from
// the oldest one still lent) and hands its slots out one by one as buffers.
// A buffer freed marks its slot; the run of freed slots at the front of the
// window goes back to the ring at once, so a buffer freed out of order is
// released with the ones before it, when they are freed. For more slots
// than the window holds, the claim is put back (the ring keeps the slots
// unread, the lent buffers stay valid: a reliable producer overwrites
// nothing unreleased) and peeked again, longer.
//
// The buffers may be freed in any thread, after the element stopped: they
// hold the window, and the window holds the subscriber (and the mapping).
struct Window {
  std::mutex mu;  // the subscriber and its claim: one thread at a time
  shmring::BroadcastSubscriber sub;
  shmring::ReadClaim claim;  // from the oldest slot still lent
  std::deque<bool> freed;    // per slot lent, from the claim's first: freed yet
  std::size_t lent = 0;      // slots of the claim handed out

  // Gives the freed front of the window back to the ring (mu held).
  void release_freed() {
    std::size_t n = 0;
    while (!freed.empty() && freed.front()) {
      freed.pop_front();
      ++n;
    }
    if (n == 0) return;
    (void)claim.release(n);
    lent -= n;
  }
};

struct SlotRef {
  std::shared_ptr<Window> window;
  std::uint64_t position;
};

void free_slot(gpointer data) {
  auto* ref = static_cast<SlotRef*>(data);
  {
    Window& w = *ref->window;
    const std::lock_guard lock(w.mu);
    // An empty claim here means the ring failed under the window (the
    // source posted the error): nothing is left to give back.
    if (!w.claim.empty()) {
      w.freed[ref->position - w.claim.position(0)] = true;
      w.release_freed();
    }
  }
  delete ref;
}

struct SrcState {
  shmring::Segment segment;
  std::shared_ptr<Window> window;  // the subscriber lives here
  bool lossy = false;
  bool in_place = false;  // reliable and copy=false
  GstCaps* caps = nullptr;
  GstClockTime frame_duration = GST_CLOCK_TIME_NONE;  // from the caps' framerate
  std::uint64_t next_frame = 0;  // the frame number (ring position) expected next
  ~SrcState() {
    if (caps) gst_caps_unref(caps);
  }
};

}  // namespace

struct _GstShmringSrc {
  GstPushSrc parent;
  // Properties (under the object lock).
  gchar* ring;
  GstShmringJoin join;
  guint64 timeout;
  gboolean copy;
  gboolean frame_meta;
  // Streaming state.
  SrcState* state;
  gint unlocked;  // atomic: unlock() asked create() to leave its wait
  // Counters (atomics): frames pushed, frames missed (lossy laps and gaps).
  guint64 frames;
  guint64 lost;
};

enum {
  PROP_0,
  PROP_RING,
  PROP_JOIN,
  PROP_TIMEOUT,
  PROP_COPY,
  PROP_FRAME_META,
  PROP_FRAMES,
  PROP_LOST
};

GType gst_shmring_join_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_SHMRING_JOIN_NEXT, "The first buffer written after joining", "next"},
      {GST_SHMRING_JOIN_OLDEST, "The oldest buffer the ring still holds", "oldest"},
      {GST_SHMRING_JOIN_NEWEST, "The last buffer written", "newest"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, g_enum_register_static("GstShmringJoin", values));
  }
  return type;
}

G_DEFINE_TYPE(GstShmringSrc, gst_shmring_src, GST_TYPE_PUSH_SRC)

static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);

namespace {

bool unlocked(GstShmringSrc* self) { return g_atomic_int_get(&self->unlocked) != 0; }

// Opens the ring (waiting up to `timeout` for it to appear), subscribes, and
// sets the caps it carries. GST_FLOW_OK, FLUSHING on unlock, or ERROR (posted).
GstFlowReturn attach(GstShmringSrc* self) {
  GST_OBJECT_LOCK(self);
  const std::string name = self->ring ? self->ring : "";
  const GstShmringJoin join = self->join;
  const guint64 timeout = self->timeout;
  const bool copy = self->copy;
  GST_OBJECT_UNLOCK(self);
  if (name.empty()) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("No ring name"),
                      ("set the 'ring' property to the ring's name"));
    return GST_FLOW_ERROR;
  }
  SrcState& st = *self->state;
  shmring::OpenOptions oo;
  oo.kind = shmring::RingKind::broadcast;
  const gint64 deadline = g_get_monotonic_time() + static_cast<gint64>(timeout / 1000);
  std::error_code ec;
  for (;;) {
    ec.clear();
    st.segment = shmring::Segment::open(name, oo, ec);
    if (ec != shmring::errc::not_found) break;
    if (unlocked(self)) return GST_FLOW_FLUSHING;
    if (timeout != GST_CLOCK_TIME_NONE && g_get_monotonic_time() > deadline) break;
    g_usleep(2000);  // the producer has not made it yet
  }
  if (ec) {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("Could not open ring '%s'", name.c_str()),
                      ("%s", ec.message().c_str()));
    return GST_FLOW_ERROR;
  }
  std::string caps;
  if (!sg::caps_from_metadata(st.segment.metadata(), caps)) {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ,
                      ("Ring '%s' was not made by shmringsink", name.c_str()),
                      ("its metadata holds no caps"));
    return GST_FLOW_ERROR;
  }
  st.caps = gst_caps_from_string(caps.c_str());
  if (st.caps == nullptr) {
    GST_ELEMENT_ERROR(self, STREAM, FORMAT,
                      ("Ring '%s' holds caps that do not parse", name.c_str()),
                      ("'%s'", caps.c_str()));
    return GST_FLOW_ERROR;
  }
  GstVideoInfo info;
  if (gst_video_info_from_caps(&info, st.caps) && GST_VIDEO_INFO_FPS_N(&info) > 0) {
    st.frame_duration = gst_util_uint64_scale_int(GST_SECOND, GST_VIDEO_INFO_FPS_D(&info),
                                                  GST_VIDEO_INFO_FPS_N(&info));
  }
  const shmring::JoinAt at = join == GST_SHMRING_JOIN_OLDEST   ? shmring::JoinAt::oldest
                             : join == GST_SHMRING_JOIN_NEWEST ? shmring::JoinAt::newest
                                                               : shmring::JoinAt::next;
  auto window = std::make_shared<Window>();
  window->sub = shmring::BroadcastSubscriber::attach(st.segment, at, {}, ec);
  if (ec) {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_READ, ("Could not subscribe to ring '%s'", name.c_str()),
                      ("%s", ec.message().c_str()));
    return GST_FLOW_ERROR;
  }
  st.lossy = window->sub.delivery() == shmring::Delivery::lossy;
  st.next_frame = window->sub.position();
  // A lossy producer may rewrite a slot while downstream reads it: those
  // buffers are copies, checked against a rewrite while copied.
  st.in_place = !st.lossy && !copy;
  st.window = std::move(window);
  GST_INFO_OBJECT(self, "subscribed to ring '%s' (%s, %s): %s", name.c_str(),
                  st.lossy ? "lossy" : "reliable", st.in_place ? "in place" : "copies",
                  caps.c_str());
  if (!gst_base_src_set_caps(GST_BASE_SRC(self), st.caps)) {
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Downstream refused the ring's caps"),
                      ("'%s'", caps.c_str()));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  return GST_FLOW_OK;
}

// The end of the stream, or the producer's death, as a flow return.
GstFlowReturn end_of(GstShmringSrc* self, shmring::Status s) {
  if (s == shmring::Status::closed) {
    GST_INFO_OBJECT(self, "the producer closed ring '%s'", self->ring);
    return GST_FLOW_EOS;
  }
  if (s == shmring::Status::peer_dead) {
    GST_ELEMENT_ERROR(self, RESOURCE, READ, ("The producer of ring '%s' died", self->ring),
                      ("it ended without closing the ring (killed or crashed)"));
    return GST_FLOW_ERROR;
  }
  GST_ELEMENT_ERROR(self, RESOURCE, READ, ("Could not read ring '%s'", self->ring),
                    ("%s", shmring::to_string(s)));
  return GST_FLOW_ERROR;
}

bool valid_header(const sg::SlotHeader& h, std::size_t message) {
  return h.magic == sg::kSlotMagic && h.header_size == kHeader && message >= kHeader &&
         h.size == message - kHeader;
}

// A skip slot (slot_format.hpp): no frame, and no frame missed either.
bool is_skip(const sg::SlotHeader& h, std::size_t message, SrcState& st) {
  if (!valid_header(h, message) || (h.header_flags & sg::kSkip) == 0) return false;
  st.next_frame = h.frame + 1;
  return true;
}
bool is_skip(const void* message, std::size_t size, SrcState& st) {
  sg::SlotHeader h{};
  if (size < sizeof h) return false;
  std::memcpy(&h, message, sizeof h);
  return is_skip(h, size, st);
}

// Timestamps, flags and the frame number of the slot header onto `buf`.
void restore(GstShmringSrc* self, GstBuffer* buf, const sg::SlotHeader& h) {
  SrcState& st = *self->state;
  GST_BUFFER_PTS(buf) = h.pts;
  GST_BUFFER_DTS(buf) = h.dts;
  GST_BUFFER_DURATION(buf) = h.duration;
  GST_BUFFER_OFFSET(buf) = h.frame;
  GST_BUFFER_OFFSET_END(buf) = h.frame + 1;
  constexpr guint kKept = GST_BUFFER_FLAG_LIVE | GST_BUFFER_FLAG_DECODE_ONLY |
                          GST_BUFFER_FLAG_DISCONT | GST_BUFFER_FLAG_CORRUPTED |
                          GST_BUFFER_FLAG_MARKER | GST_BUFFER_FLAG_HEADER | GST_BUFFER_FLAG_GAP |
                          GST_BUFFER_FLAG_DROPPABLE | GST_BUFFER_FLAG_DELTA_UNIT |
                          GST_BUFFER_FLAG_NON_DROPPABLE;
  GST_BUFFER_FLAG_SET(buf, h.buffer_flags & kKept);
  // Frame numbers are ring positions: a gap from the position the source
  // joined at, or between two frames, is frames missed (a lossy lap), and
  // a discontinuity downstream should know about.
  if (h.frame != st.next_frame) GST_BUFFER_FLAG_SET(buf, GST_BUFFER_FLAG_DISCONT);
  if (h.frame > st.next_frame) {
    const guint64 gap = h.frame - st.next_frame;
    GST_OBJECT_LOCK(self);
    self->lost += gap;
    GST_OBJECT_UNLOCK(self);
  }
  st.next_frame = h.frame + 1;
  GST_OBJECT_LOCK(self);
  const bool meta = self->frame_meta;
  ++self->frames;
  GST_OBJECT_UNLOCK(self);
  if (meta) {
    GstCustomMeta* m = gst_buffer_add_custom_meta(buf, GST_SHMRING_FRAME_META_NAME);
    if (m) {
      gst_structure_set(gst_custom_meta_get_structure(m), "frame", G_TYPE_UINT64, h.frame,
                        "checksum", G_TYPE_UINT64, h.checksum, "has-checksum", G_TYPE_BOOLEAN,
                        (h.header_flags & sg::kHasChecksum) != 0, nullptr);
    }
  }
}

// Lossy (or copy=true): the next buffer, copied out of its slot whole.
GstFlowReturn create_copy(GstShmringSrc* self, GstBuffer** out) {
  SrcState& st = *self->state;
  Window& w = *st.window;
  const std::size_t slot = w.sub.slot_size();
  GstBuffer* buf = gst_buffer_new_allocate(nullptr, slot, nullptr);
  GstMapInfo map;
  if (!gst_buffer_map(buf, &map, GST_MAP_WRITE)) {
    gst_buffer_unref(buf);
    GST_ELEMENT_ERROR(self, RESOURCE, FAILED, ("Could not map a buffer"), (nullptr));
    return GST_FLOW_ERROR;
  }
  std::size_t size = 0;
  shmring::Status s;
  for (;;) {
    s = w.sub.pop(std::span(reinterpret_cast<std::byte*>(map.data), map.size), size, kWaitSlice);
    if (s == shmring::Status::ok && is_skip(map.data, size, st)) continue;
    if (s == shmring::Status::ok) break;
    if (s == shmring::Status::overrun) continue;  // lapped: counted; go on with the newest
    if (s != shmring::Status::timeout) break;
    if (unlocked(self)) {
      gst_buffer_unmap(buf, &map);
      gst_buffer_unref(buf);
      return GST_FLOW_FLUSHING;
    }
  }
  sg::SlotHeader h{};
  if (s == shmring::Status::ok) std::memcpy(&h, map.data, sizeof h);
  gst_buffer_unmap(buf, &map);
  if (s != shmring::Status::ok) {
    gst_buffer_unref(buf);
    return end_of(self, s);
  }
  if (!valid_header(h, size)) {
    gst_buffer_unref(buf);
    GST_ELEMENT_ERROR(self, STREAM, DECODE,
                      ("A slot of ring '%s' is not a shmringsink frame", self->ring),
                      ("bad slot header (magic %08x, %zu bytes)", h.magic, size));
    return GST_FLOW_ERROR;
  }
  gst_buffer_resize(buf, static_cast<gssize>(kHeader), static_cast<gssize>(h.size));
  restore(self, buf, h);
  *out = buf;
  return GST_FLOW_OK;
}

// Reliable: until the window holds a slot not lent yet (GST_FLOW_OK), the
// end of the stream, or a flush. `lock` holds w.mu.
GstFlowReturn fill_window(GstShmringSrc* self, Window& w, std::unique_lock<std::mutex>& lock) {
  for (;;) {
    if (w.lent < w.claim.size()) return GST_FLOW_OK;  // a slot not handed out
    shmring::Status s;
    if (w.lent == 0) {
      // Nothing lent: wait for the next slot here (frees cannot race: there
      // is nothing to free).
      w.claim = w.sub.peek(w.sub.capacity(), kWaitSlice);
      s = w.claim.status();
      if (s == shmring::Status::ok) continue;
    } else {
      // Lent slots stay in the window: put it back (nothing is released)
      // and take it again with what came since.
      (void)w.claim.put_back();
      w.claim = w.sub.try_peek(w.sub.capacity());
      s = w.claim.status();
      if (s == shmring::Status::ok && w.claim.size() > w.lent) continue;
      if (s == shmring::Status::ok) {
        // Nothing new, and the reading calls would hand the lent slots again
        // rather than wait or say that the stream ended: wait for what comes
        // after them, without the lock, so that frees go back to the ring
        // meanwhile (wait_past touches nothing they change).
        const std::uint64_t end = w.claim.position(0) + w.claim.size();
        lock.unlock();
        const shmring::Status waited = w.sub.wait_past(end, kWaitSlice);
        lock.lock();
        if (waited == shmring::Status::closed || waited == shmring::Status::peer_dead) {
          return end_of(self, waited);
        }
        s = shmring::Status::timeout;  // look again
      }
    }
    GST_LOG_OBJECT(self, "window: %s, %zu slots, %zu lent, at %llu", shmring::to_string(s),
                   w.claim.size(), w.lent, static_cast<unsigned long long>(w.sub.position()));
    if (s != shmring::Status::timeout && s != shmring::Status::would_block) {
      return end_of(self, s);
    }
    if (unlocked(self)) return GST_FLOW_FLUSHING;
  }
}

// Reliable: the next slot, lent in place until downstream frees the buffer.
GstFlowReturn create_in_place(GstShmringSrc* self, GstBuffer** out) {
  SrcState& st = *self->state;
  const std::shared_ptr<Window>& wp = st.window;
  Window& w = *wp;
  std::unique_lock lock(w.mu);
  const std::byte* slot = nullptr;
  sg::SlotHeader h{};
  for (;;) {
    if (const GstFlowReturn r = fill_window(self, w, lock); r != GST_FLOW_OK) return r;
    const std::span<const std::byte> m = w.claim[w.lent];
    std::memcpy(&h, m.data(), std::min(m.size(), sizeof h));
    if (is_skip(h, m.size(), st)) {
      // Nothing to lend: the slot goes back with the ones before it.
      ++w.lent;
      w.freed.push_back(true);
      w.release_freed();
      continue;
    }
    if (!valid_header(h, m.size())) {
      GST_ELEMENT_ERROR(self, STREAM, DECODE,
                        ("A slot of ring '%s' is not a shmringsink frame", self->ring),
                        ("bad slot header (magic %08x, %zu bytes)", h.magic, m.size()));
      return GST_FLOW_ERROR;
    }
    slot = m.data();
    break;
  }
  GST_LOG_OBJECT(self, "lending position %llu (frame %llu)",
                 static_cast<unsigned long long>(w.claim.position(w.lent)),
                 static_cast<unsigned long long>(h.frame));
  auto* ref = new SlotRef{wp, w.claim.position(w.lent)};
  ++w.lent;
  w.freed.push_back(false);
  lock.unlock();
  auto* data = const_cast<std::byte*>(slot + kHeader);
  GstBuffer* buf = gst_buffer_new_wrapped_full(GST_MEMORY_FLAG_READONLY, data, h.size, 0, h.size,
                                               ref, free_slot);
  restore(self, buf, h);
  *out = buf;
  return GST_FLOW_OK;
}

}  // namespace

static gboolean gst_shmring_src_start(GstBaseSrc* src) {
  GstShmringSrc* self = GST_SHMRING_SRC(src);
  GST_OBJECT_LOCK(self);
  const std::string name = self->ring ? self->ring : "";
  GST_OBJECT_UNLOCK(self);
  const std::string problem =
      name.empty() ? "set the 'ring' property" : shmring::Segment::name_problem(name);
  if (!problem.empty()) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("Bad ring name '%s'", name.c_str()),
                      ("%s", problem.c_str()));
    return FALSE;
  }
  self->state = new SrcState();
  g_atomic_int_set(&self->unlocked, 0);
  GST_OBJECT_LOCK(self);
  self->frames = 0;
  self->lost = 0;
  GST_OBJECT_UNLOCK(self);
  return TRUE;
}

static gboolean gst_shmring_src_stop(GstBaseSrc* src) {
  GstShmringSrc* self = GST_SHMRING_SRC(src);
  // Buffers still downstream keep the window (and the subscription) until
  // they are freed.
  delete self->state;
  self->state = nullptr;
  return TRUE;
}

static GstFlowReturn gst_shmring_src_create(GstPushSrc* src, GstBuffer** buf) {
  GstShmringSrc* self = GST_SHMRING_SRC(src);
  SrcState& st = *self->state;
  if (!st.window) {
    const GstFlowReturn r = attach(self);
    if (r != GST_FLOW_OK) return r;
  }
  return st.in_place ? create_in_place(self, buf) : create_copy(self, buf);
}

static GstCaps* gst_shmring_src_get_caps(GstBaseSrc* src, GstCaps* filter) {
  GstShmringSrc* self = GST_SHMRING_SRC(src);
  GstCaps* caps =
      (self->state && self->state->caps) ? gst_caps_ref(self->state->caps) : gst_caps_new_any();
  if (filter) {
    GstCaps* both = gst_caps_intersect_full(filter, caps, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref(caps);
    caps = both;
  }
  return caps;
}

static gboolean gst_shmring_src_query(GstBaseSrc* src, GstQuery* query) {
  GstShmringSrc* self = GST_SHMRING_SRC(src);
  if (GST_QUERY_TYPE(query) == GST_QUERY_LATENCY) {
    // A live source: a frame reaches us at most one frame time after its
    // capture began; a reliable ring may hold a ring's worth behind.
    GstClockTime min = 0;
    GstClockTime max = GST_CLOCK_TIME_NONE;
    if (self->state && GST_CLOCK_TIME_IS_VALID(self->state->frame_duration)) {
      min = self->state->frame_duration;
      if (self->state->window) max = min * self->state->window->sub.capacity();
    }
    gst_query_set_latency(query, TRUE, min, max);
    return TRUE;
  }
  return GST_BASE_SRC_CLASS(gst_shmring_src_parent_class)->query(src, query);
}

static gboolean gst_shmring_src_unlock(GstBaseSrc* src) {
  g_atomic_int_set(&GST_SHMRING_SRC(src)->unlocked, 1);
  return TRUE;
}

static gboolean gst_shmring_src_unlock_stop(GstBaseSrc* src) {
  g_atomic_int_set(&GST_SHMRING_SRC(src)->unlocked, 0);
  return TRUE;
}

static void gst_shmring_src_set_property(GObject* object, guint id, const GValue* value,
                                         GParamSpec* pspec) {
  GstShmringSrc* self = GST_SHMRING_SRC(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
    case PROP_RING:
      g_free(self->ring);
      self->ring = g_value_dup_string(value);
      break;
    case PROP_JOIN:
      self->join = static_cast<GstShmringJoin>(g_value_get_enum(value));
      break;
    case PROP_TIMEOUT:
      self->timeout = g_value_get_uint64(value);
      break;
    case PROP_COPY:
      self->copy = g_value_get_boolean(value);
      break;
    case PROP_FRAME_META:
      self->frame_meta = g_value_get_boolean(value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_shmring_src_get_property(GObject* object, guint id, GValue* value,
                                         GParamSpec* pspec) {
  GstShmringSrc* self = GST_SHMRING_SRC(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
    case PROP_RING:
      g_value_set_string(value, self->ring);
      break;
    case PROP_JOIN:
      g_value_set_enum(value, self->join);
      break;
    case PROP_TIMEOUT:
      g_value_set_uint64(value, self->timeout);
      break;
    case PROP_COPY:
      g_value_set_boolean(value, self->copy);
      break;
    case PROP_FRAME_META:
      g_value_set_boolean(value, self->frame_meta);
      break;
    case PROP_FRAMES:
      g_value_set_uint64(value, self->frames);
      break;
    case PROP_LOST:
      g_value_set_uint64(value, self->lost);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_shmring_src_finalize(GObject* object) {
  GstShmringSrc* self = GST_SHMRING_SRC(object);
  g_free(self->ring);
  delete self->state;
  G_OBJECT_CLASS(gst_shmring_src_parent_class)->finalize(object);
}

static void gst_shmring_src_init(GstShmringSrc* self) {
  self->ring = nullptr;
  self->join = GST_SHMRING_JOIN_NEXT;
  self->timeout = GST_CLOCK_TIME_NONE;
  self->copy = FALSE;
  self->frame_meta = FALSE;
  self->state = nullptr;
  self->unlocked = 0;
  self->frames = 0;
  self->lost = 0;
  GstBaseSrc* base = GST_BASE_SRC(self);
  gst_base_src_set_live(base, TRUE);
  gst_base_src_set_format(base, GST_FORMAT_TIME);
}

static void gst_shmring_src_class_init(GstShmringSrcClass* klass) {
  GObjectClass* gobject = G_OBJECT_CLASS(klass);
  GstElementClass* element = GST_ELEMENT_CLASS(klass);
  GstBaseSrcClass* base = GST_BASE_SRC_CLASS(klass);
  GstPushSrcClass* push = GST_PUSH_SRC_CLASS(klass);
  GST_DEBUG_CATEGORY_INIT(shmring_src_debug, "shmringsrc", 0, "shmring broadcast ring source");

  gobject->set_property = gst_shmring_src_set_property;
  gobject->get_property = gst_shmring_src_get_property;
  gobject->finalize = gst_shmring_src_finalize;
  const auto rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                           GST_PARAM_MUTABLE_READY);
  const auto ro = static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  g_object_class_install_property(
      gobject, PROP_RING,
      g_param_spec_string("ring", "Ring", "Name of the broadcast ring (in /dev/shm)", nullptr, rw));
  g_object_class_install_property(
      gobject, PROP_JOIN,
      g_param_spec_enum("join", "Join", "Where the source joins the stream", GST_TYPE_SHMRING_JOIN,
                        GST_SHMRING_JOIN_NEXT, rw));
  g_object_class_install_property(
      gobject, PROP_TIMEOUT,
      g_param_spec_uint64("timeout", "Timeout",
                          "How long to wait for the ring to appear (ns; -1 forever)", 0,
                          G_MAXUINT64, GST_CLOCK_TIME_NONE, rw));
  g_object_class_install_property(
      gobject, PROP_COPY,
      g_param_spec_boolean("copy", "Copy",
                           "Copy each buffer out of its slot instead of lending the slot (a "
                           "lossy ring is always copied)",
                           FALSE, rw));
  g_object_class_install_property(gobject, PROP_FRAME_META,
                                  g_param_spec_boolean("frame-meta", "Frame meta",
                                                       "Attach a " GST_SHMRING_FRAME_META_NAME
                                                       " (frame number, checksum) to each buffer",
                                                       FALSE, rw));
  g_object_class_install_property(
      gobject, PROP_FRAMES,
      g_param_spec_uint64("frames", "Frames", "Buffers pushed so far", 0, G_MAXUINT64, 0, ro));
  g_object_class_install_property(
      gobject, PROP_LOST,
      g_param_spec_uint64("lost", "Lost",
                          "Frames missed so far (gaps in the frame numbers: a lossy ring "
                          "lapped this source)",
                          0, G_MAXUINT64, 0, ro));

  gst_element_class_add_static_pad_template(element, &src_template);
  gst_element_class_set_static_metadata(
      element, "shmring source", "Source/Video",
      "Reads the buffers a shmringsink writes into a shmring broadcast ring", "shmring project");

  base->start = gst_shmring_src_start;
  base->stop = gst_shmring_src_stop;
  base->get_caps = gst_shmring_src_get_caps;
  base->query = gst_shmring_src_query;
  base->unlock = gst_shmring_src_unlock;
  base->unlock_stop = gst_shmring_src_unlock_stop;
  push->create = gst_shmring_src_create;
}
