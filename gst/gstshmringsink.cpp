#include "gstshmringsink.hpp"

#include <gst/video/video.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>

#include "gstshmringpool.hpp"
#include "shmring/broadcast_ring.hpp"
#include "shmring/error.hpp"
#include "shmring/segment.hpp"
#include "slot_format.hpp"

GST_DEBUG_CATEGORY_STATIC(shmring_sink_debug);
#define GST_CAT_DEFAULT shmring_sink_debug

namespace {

using namespace std::chrono_literals;
namespace sg = shmring::gst;

// A reliable sink waits for room in slices this long, so that a flush or a
// state change (unlock) is seen within one of them.
constexpr auto kWaitSlice = 20ms;

// What the sink holds between start() and stop().
struct SinkState {
  // Made empty at start, for the pool to share; the ring is put in with
  // the first buffer (ring_open).
  std::shared_ptr<sg::SinkRing> ring = std::make_shared<sg::SinkRing>();
  bool ring_open = false;
  bool created = false;                  // this sink created the ring (and unlinks it at stop)
  bool have_caps = false;                // set_caps ran
  std::string caps;                      // the negotiated caps, as stored in the ring
  std::size_t frame_size = 0;            // raw video: the frame's bytes; else 0 (known per buffer)
  std::atomic<std::uint64_t> frames{0};  // buffers written (read by get_property)
  std::atomic<std::uint64_t> in_place{0};  // of which upstream wrote in their slot
  bool subscribers_seen = false;
};

}  // namespace

struct _GstShmringSink {
  GstBaseSink parent;
  // Properties (under the object lock).
  gchar* ring;
  guint slots;
  GstShmringMode mode;
  guint subscribers;
  guint max_bytes;
  gboolean cuda_register;
  gboolean checksum;
  guint wait_subscribers;
  guint64 wait_timeout;
  gboolean unlink_at_stop;
  // Streaming state: created in start(), used by the streaming thread.
  SinkState* state;
  gint unlocked;  // atomic: unlock() asked the streaming thread to leave its wait
};

enum {
  PROP_0,
  PROP_RING,
  PROP_SLOTS,
  PROP_MODE,
  PROP_SUBSCRIBERS,
  PROP_MAX_BYTES,
  PROP_CUDA_REGISTER,
  PROP_CHECKSUM,
  PROP_WAIT_SUBSCRIBERS,
  PROP_WAIT_TIMEOUT,
  PROP_UNLINK,
  PROP_FRAMES,
  PROP_FRAMES_IN_PLACE,
};

GType gst_shmring_mode_get_type(void) {
  static GType type = 0;
  static const GEnumValue values[] = {
      {GST_SHMRING_MODE_AUTO, "Lossy when upstream is live, reliable otherwise", "auto"},
      {GST_SHMRING_MODE_RELIABLE, "Every subscriber gets every buffer; the sink waits", "reliable"},
      {GST_SHMRING_MODE_LOSSY, "The sink never waits; a lapped subscriber skips ahead", "lossy"},
      {0, nullptr, nullptr}};
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, g_enum_register_static("GstShmringMode", values));
  }
  return type;
}

G_DEFINE_TYPE(GstShmringSink, gst_shmring_sink, GST_TYPE_BASE_SINK)

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS_ANY);

namespace {

constexpr std::size_t kHeader = sizeof(sg::SlotHeader);

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

// Upstream's latency query says whether it is live (auto mode).
bool upstream_is_live(GstShmringSink* self) {
  GstQuery* q = gst_query_new_latency();
  gboolean live = FALSE;
  if (gst_pad_peer_query(GST_BASE_SINK_PAD(self), q)) {
    gst_query_parse_latency(q, &live, nullptr, nullptr);
  }
  gst_query_unref(q);
  return live;
}

// Creates the ring for the negotiated caps, or opens the one that exists and
// checks that it carries the same caps and has room for `payload` bytes.
// Posts an element error and returns false where it cannot.
bool ensure_ring(GstShmringSink* self, std::size_t payload) {
  SinkState& st = *self->state;
  if (st.ring_open) {
    if (kHeader + payload > st.ring->producer.slot_size()) {
      GST_ELEMENT_ERROR(self, STREAM, FAILED, ("Buffer too large for the ring's slots"),
                        ("a buffer of %zu bytes (+%zu of header) does not fit ring '%s', whose "
                         "slots hold %llu bytes; set max-bytes",
                         payload, kHeader, self->ring,
                         static_cast<unsigned long long>(st.ring->producer.slot_size())));
      return false;
    }
    return true;
  }
  GST_OBJECT_LOCK(self);
  const std::string name = self->ring ? self->ring : "";
  shmring::CreateOptions o;
  o.kind = shmring::RingKind::broadcast;
  o.capacity = self->slots;
  o.subscribers = self->subscribers;
  const GstShmringMode mode = self->mode;
  const std::size_t max_bytes = self->max_bytes;
  const bool cuda = self->cuda_register;
  GST_OBJECT_UNLOCK(self);
  if (name.empty()) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("No ring name"),
                      ("set the 'ring' property to the ring's name"));
    return false;
  }
  const bool lossy =
      mode == GST_SHMRING_MODE_LOSSY || (mode == GST_SHMRING_MODE_AUTO && upstream_is_live(self));
  o.delivery = lossy ? shmring::Delivery::lossy : shmring::Delivery::reliable;
  o.slot_size = round_up(kHeader + std::max(payload, max_bytes), 64);
  o.metadata = sg::metadata_for_caps(st.caps);
  if (o.metadata.size() > shmring::kMetadataCapacity) {
    GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("Caps too long for the ring"),
                      ("the caps string is %zu bytes; a ring stores at most %zu", st.caps.size(),
                       shmring::kMetadataCapacity - sg::kMetadataPrefix.size()));
    return false;
  }

  shmring::Segment segment;
  std::error_code ec;
  shmring::OpenOptions oo;
  oo.kind = shmring::RingKind::broadcast;
  segment = shmring::Segment::open(name, oo, ec);
  if (ec == shmring::errc::not_found) {
    ec.clear();
    segment = shmring::Segment::create(name, o, ec);
    st.created = !ec;
    if (ec == shmring::errc::already_exists) {  // another sink won the race: use its ring
      ec.clear();
      segment = shmring::Segment::open(name, oo, ec);
    }
  }
  if (ec) {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_WRITE, ("Could not open ring '%s'", name.c_str()),
                      ("%s", ec.message().c_str()));
    return false;
  }
  if (!st.created) {
    // An existing ring: its caps and slots must fit this stream.
    std::string stored;
    if (!sg::caps_from_metadata(segment.metadata(), stored)) {
      GST_ELEMENT_ERROR(self, RESOURCE, OPEN_WRITE,
                        ("Ring '%s' was not made by shmringsink", name.c_str()),
                        ("its metadata holds no caps; remove it or choose another name"));
      return false;
    }
    GstCaps* theirs = gst_caps_from_string(stored.c_str());
    GstCaps* ours = gst_caps_from_string(st.caps.c_str());
    const bool same = theirs && ours && gst_caps_is_equal(theirs, ours);
    if (theirs) gst_caps_unref(theirs);
    if (ours) gst_caps_unref(ours);
    if (!same) {
      GST_ELEMENT_ERROR(
          self, CORE, NEGOTIATION, ("Ring '%s' carries other caps", name.c_str()),
          ("the ring holds '%s', this stream is '%s'", stored.c_str(), st.caps.c_str()));
      return false;
    }
    if (kHeader + payload > segment.geometry().slot_size) {
      GST_ELEMENT_ERROR(
          self, RESOURCE, OPEN_WRITE, ("Ring '%s' has slots too small", name.c_str()),
          ("its slots hold %llu bytes, a buffer needs %zu",
           static_cast<unsigned long long>(segment.geometry().slot_size), kHeader + payload));
      return false;
    }
  }
  sg::SinkRing& ring = *st.ring;
  if (cuda) {
#if SHMRING_HAVE_CUDA
    ring.registration = shmring::cuda::Registration::register_segment(segment, 0, ec);
    if (ec) {
      GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS,
                        ("Could not register ring '%s' with CUDA", name.c_str()),
                        ("%s", ec.message().c_str()));
      return false;
    }
#endif
  }
  shmring::BroadcastProducer producer = shmring::BroadcastProducer::attach(segment, {}, ec);
  if (ec) {
    GST_ELEMENT_ERROR(self, RESOURCE, OPEN_WRITE, ("Could not write to ring '%s'", name.c_str()),
                      ("%s", ec.message().c_str()));
    return false;
  }
  const bool is_lossy = producer.delivery() == shmring::Delivery::lossy;
  GST_INFO_OBJECT(
      self, "%s ring '%s': %llu slots of %llu bytes, %s", st.created ? "created" : "opened",
      name.c_str(), static_cast<unsigned long long>(producer.capacity()),
      static_cast<unsigned long long>(producer.slot_size()), is_lossy ? "lossy" : "reliable");
  {
    // From here on the pool lends slots (upstream may be acquiring now).
    const std::lock_guard lock(ring.mu);
    ring.live.assign(static_cast<std::size_t>(producer.capacity()), 0);
    ring.segment = std::move(segment);
    ring.producer = std::move(producer);
    ring.lossy = is_lossy;
    ring.frame_size = st.frame_size;
  }
  st.ring_open = true;
  return true;
}

// Subscribers attached now (active blocks).
std::uint32_t attached_subscribers(const shmring::Segment& segment) {
  const shmring::BroadcastView v(segment.base(), segment.geometry());
  std::uint32_t n = 0;
  for (std::uint32_t i = 0; i < v.subscribers(); ++i) {
    if (v.counts(i)) ++n;
  }
  return n;
}

// wait-subscribers: before the first buffer, until that many subscribers
// are attached, so that none of them misses the start of the stream.
GstFlowReturn wait_for_subscribers(GstShmringSink* self) {
  SinkState& st = *self->state;
  GST_OBJECT_LOCK(self);
  const guint want = self->wait_subscribers;
  const guint64 timeout = self->wait_timeout;
  GST_OBJECT_UNLOCK(self);
  const gint64 deadline = g_get_monotonic_time() + static_cast<gint64>(timeout / 1000);
  while (attached_subscribers(st.ring->segment) < want) {
    if (g_atomic_int_get(&self->unlocked)) {
      const GstFlowReturn r = gst_base_sink_wait_preroll(GST_BASE_SINK(self));
      if (r != GST_FLOW_OK) return r;
    }
    if (timeout != GST_CLOCK_TIME_NONE && g_get_monotonic_time() > deadline) {
      GST_ELEMENT_ERROR(self, RESOURCE, BUSY, ("Too few subscribers"),
                        ("%u subscriber(s) wanted on ring '%s', %u came within the timeout", want,
                         self->ring, attached_subscribers(st.ring->segment)));
      return GST_FLOW_ERROR;
    }
    g_usleep(1000);
  }
  st.subscribers_seen = true;
  return GST_FLOW_OK;
}

sg::SlotHeader header_for(GstBuffer* buf, std::uint64_t position, const GstMapInfo& map,
                          bool checksum) {
  sg::SlotHeader h{};
  h.magic = sg::kSlotMagic;
  h.header_size = sizeof(sg::SlotHeader);
  h.version = sg::kSlotVersion;
  h.pts = GST_BUFFER_PTS(buf);
  h.dts = GST_BUFFER_DTS(buf);
  h.duration = GST_BUFFER_DURATION(buf);
  h.frame = position;
  h.offset = GST_BUFFER_OFFSET(buf);
  h.buffer_flags = GST_BUFFER_FLAGS(buf);
  h.size = static_cast<std::uint32_t>(map.size);
  if (checksum) {
    h.header_flags |= sg::kHasChecksum;
    h.checksum = sg::payload_checksum(map.data, map.size);
  }
  return h;
}

// A slot buffer of this ring's pool whose claim is still open: its header
// goes in front of the frame upstream wrote in place, and the claim is
// published. False (nothing done) for any other buffer (ring.mu held).
bool publish_in_place(sg::SinkRing& r, GstBuffer* buf, const GstMapInfo& map, bool checksum) {
  if (r.claim_owner == nullptr || gst_buffer_n_memory(buf) != 1) return false;
  const sg::SlotLease* lease = sg::slot_lease(gst_buffer_peek_memory(buf, 0));
  if (lease != r.claim_owner) return false;
  std::byte* slot = r.claim[0].data();
  // The buffer may have been resized or offset upstream: in place only if
  // the frame still starts right after the header.
  if (reinterpret_cast<std::byte*>(map.data) != slot + kHeader) return false;
  const sg::SlotHeader h = header_for(buf, r.claim.position(0), map, checksum);
  std::memcpy(slot, &h, sizeof h);  // reliable only: no reader looks at a claimed slot
  r.claim_owner = nullptr;          // the buffer stays alive (r.live) until freed
  return r.claim.commit(kHeader + map.size) == shmring::Status::ok;
}

// Copies one buffer into the slot of `claim` and publishes it (one copy).
void copy_into(sg::SinkRing& r, shmring::WriteClaim& claim, GstBuffer* buf, const GstMapInfo& map,
               bool checksum) {
  const sg::SlotHeader h = header_for(buf, claim.position(0), map, checksum);
  std::byte* slot = claim[0].data();
  if (r.lossy) {
    // Subscribers may be reading this slot while it is rewritten: relaxed
    // atomic words keep that race defined (their seqlock discards the read).
    shmring::store_words(slot, &h, sizeof h);
    shmring::store_words(slot + kHeader, map.data, map.size);
  } else {
    std::memcpy(slot, &h, sizeof h);
    std::memcpy(slot + kHeader, map.data, map.size);
  }
  (void)claim.commit(kHeader + map.size);
}

}  // namespace

static gboolean gst_shmring_sink_start(GstBaseSink* sink) {
  GstShmringSink* self = GST_SHMRING_SINK(sink);
#if !SHMRING_HAVE_CUDA
  GST_OBJECT_LOCK(self);
  const bool cuda = self->cuda_register;
  GST_OBJECT_UNLOCK(self);
  if (cuda) {
    GST_ELEMENT_ERROR(self, RESOURCE, SETTINGS, ("cuda-register is not available"),
                      ("this shmring plugin was built without CUDA; set cuda-register=false"));
    return FALSE;
  }
#endif
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
  self->state = new SinkState();
  g_atomic_int_set(&self->unlocked, 0);
  return TRUE;
}

static gboolean gst_shmring_sink_stop(GstBaseSink* sink) {
  GstShmringSink* self = GST_SHMRING_SINK(sink);
  GST_OBJECT_LOCK(self);  // get_property reads the frame count through it
  SinkState* st = self->state;
  self->state = nullptr;
  GST_OBJECT_UNLOCK(self);
  if (st == nullptr) return TRUE;
  const bool unlink = st->created && self->unlink_at_stop;
  {
    sg::SinkRing& r = *st->ring;
    const std::lock_guard lock(r.mu);
    r.stopped = true;  // slot buffers upstream still holds keep the mapping, nothing else
    r.claim.abort();
    r.claim_owner = nullptr;
    // The producer's end closes the stream: subscribers drain, then see EOS.
    r.producer = shmring::BroadcastProducer();
    if (unlink && st->ring_open) {
      std::error_code ec;
      shmring::Segment::unlink(r.segment.name(), ec);
    }
  }
  delete st;
  return TRUE;
}

static gboolean gst_shmring_sink_set_caps(GstBaseSink* sink, GstCaps* caps) {
  GstShmringSink* self = GST_SHMRING_SINK(sink);
  SinkState& st = *self->state;
  gchar* text = gst_caps_to_string(caps);
  std::string s = text;
  g_free(text);
  if (st.ring_open) {
    // A ring keeps the caps it was made for.
    GstCaps* old = gst_caps_from_string(st.caps.c_str());
    const bool same = old && gst_caps_is_equal(old, caps);
    if (old) gst_caps_unref(old);
    if (same) return TRUE;
    GST_ELEMENT_ERROR(
        self, CORE, NEGOTIATION, ("Caps changed mid-stream"),
        ("ring '%s' carries '%s'; the stream now is '%s'", self->ring, st.caps.c_str(), s.c_str()));
    return FALSE;
  }
  st.caps = std::move(s);
  st.have_caps = true;
  st.frame_size = 0;
  // Raw video: slots sized for a frame of these caps. The ring itself is
  // made with the first buffer (render), where a failure is an ordinary
  // flow error; a source still learns the caps before that first frame.
  GstVideoInfo info;
  GstStructure* str = gst_caps_get_structure(caps, 0);
  if (gst_structure_has_name(str, "video/x-raw") && gst_video_info_from_caps(&info, caps)) {
    st.frame_size = GST_VIDEO_INFO_SIZE(&info);
  }
  return TRUE;
}

static GstFlowReturn gst_shmring_sink_render(GstBaseSink* sink, GstBuffer* buf) {
  GstShmringSink* self = GST_SHMRING_SINK(sink);
  SinkState& st = *self->state;
  if (!st.have_caps) {
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("No caps before the first buffer"), (nullptr));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  const std::size_t size = gst_buffer_get_size(buf);
  if (!ensure_ring(self, std::max(size, st.frame_size))) return GST_FLOW_ERROR;
  if (!st.subscribers_seen) {
    const GstFlowReturn r = wait_for_subscribers(self);
    if (r != GST_FLOW_OK) return r;
  }
  GstMapInfo map;
  if (!gst_buffer_map(buf, &map, GST_MAP_READ)) {
    GST_ELEMENT_ERROR(self, RESOURCE, READ, ("Could not map a buffer"), (nullptr));
    return GST_FLOW_ERROR;
  }
  GST_OBJECT_LOCK(self);
  const bool checksum = self->checksum;
  GST_OBJECT_UNLOCK(self);
  sg::SinkRing& r = *st.ring;
  GstFlowReturn ret = GST_FLOW_OK;
  std::unique_lock lock(r.mu);
  if (publish_in_place(r, buf, map, checksum)) {
    lock.unlock();
    st.frames.fetch_add(1, std::memory_order_relaxed);
    st.in_place.fetch_add(1, std::memory_order_relaxed);
    gst_buffer_unmap(buf, &map);
    return GST_FLOW_OK;
  }
  for (;;) {
    if (r.claim_owner != nullptr) {
      // A slot buffer upstream has not pushed (yet), and this buffer comes
      // first: its slot becomes a skip slot, and this buffer goes after it.
      // The buffer, if it comes later, is copied as any other. (Looked at
      // on every turn: the pool may lend a slot while this waits unlocked.)
      GST_DEBUG_OBJECT(self, "position %llu skipped: its slot buffer was not rendered in turn",
                       static_cast<unsigned long long>(r.claim.position(0)));
      sg::publish_skip(r, r.claim);
      r.claim_owner = nullptr;
    }
    // Lossy: a claim never waits. Reliable: wait for the slowest subscriber
    // in slices, leaving at once for a flush or a state change.
    shmring::WriteClaim claim = r.producer.claim(1, kWaitSlice);
    if (claim.status() == shmring::Status::ok) {
      if (r.live[r.index(claim.position(0))] != 0) {
        // A slot buffer upstream still holds lives in this slot: pass it by.
        sg::publish_skip(r, claim);
        continue;
      }
      copy_into(r, claim, buf, map, checksum);
      st.frames.fetch_add(1, std::memory_order_relaxed);
      GST_LOG_OBJECT(self, "published frame %llu",
                     static_cast<unsigned long long>(r.producer.position()));
      break;
    }
    if (claim.status() != shmring::Status::timeout) {
      GST_ELEMENT_ERROR(self, RESOURCE, WRITE, ("Could not write to ring '%s'", self->ring),
                        ("%s", shmring::to_string(claim.status())));
      ret = GST_FLOW_ERROR;
      break;
    }
    if (g_atomic_int_get(&self->unlocked)) {
      lock.unlock();
      ret = gst_base_sink_wait_preroll(sink);  // returns FLUSHING on a flush or a stop
      lock.lock();
      if (ret != GST_FLOW_OK) break;
    } else {
      lock.unlock();  // the pool's and the frees' turn
      lock.lock();
    }
  }
  lock.unlock();
  gst_buffer_unmap(buf, &map);
  return ret;
}

// Raw video: a pool whose buffers are the ring's slots, so that upstream
// draws each frame where the readers read it. The ring is made with the
// first buffer (where a failure is a flow error, which stops upstream):
// until then, and on a lossy ring, the pool hands out ordinary memory. A
// lossy ring's slots may be read while they are written, which only the
// sink's own word-wise copy keeps defined.
static gboolean gst_shmring_sink_propose_allocation(GstBaseSink* sink, GstQuery* query) {
  GstShmringSink* self = GST_SHMRING_SINK(sink);
  GstCaps* caps = nullptr;
  gboolean need_pool = FALSE;
  gst_query_parse_allocation(query, &caps, &need_pool);
  SinkState* st = self->state;
  if (st == nullptr || !st->have_caps || st->frame_size == 0 || caps == nullptr || !need_pool) {
    return TRUE;
  }
  GstVideoInfo info;
  if (!gst_video_info_from_caps(&info, caps) || GST_VIDEO_INFO_SIZE(&info) != st->frame_size) {
    return TRUE;  // not the caps the sink has: no pool for those
  }
  GstBufferPool* pool = sg::slot_pool_new(st->ring);
  GstStructure* config = gst_buffer_pool_get_config(pool);
  const guint size = static_cast<guint>(st->frame_size);
  gst_buffer_pool_config_set_params(config, caps, size, 0, 0);
  if (!gst_buffer_pool_set_config(pool, config)) {
    gst_object_unref(pool);
    return TRUE;
  }
  gst_query_add_allocation_pool(query, pool, size, 0, 0);
  gst_object_unref(pool);
  GST_DEBUG_OBJECT(self, "proposed a pool of the ring's slots (%u-byte frames)", size);
  return TRUE;
}

static gboolean gst_shmring_sink_event(GstBaseSink* sink, GstEvent* event) {
  GstShmringSink* self = GST_SHMRING_SINK(sink);
  if (GST_EVENT_TYPE(event) == GST_EVENT_EOS && self->state && self->state->ring_open) {
    sg::SinkRing& r = *self->state->ring;
    const std::lock_guard lock(r.mu);
    // A slot buffer upstream acquired and never pushed: nothing comes after
    // EOS, so its claim goes (a producer with a claim cannot close).
    r.claim.abort();
    r.claim_owner = nullptr;
    // Subscribers read every buffer, then get the end of the stream.
    (void)r.producer.close();
  }
  return GST_BASE_SINK_CLASS(gst_shmring_sink_parent_class)->event(sink, event);
}

static gboolean gst_shmring_sink_unlock(GstBaseSink* sink) {
  g_atomic_int_set(&GST_SHMRING_SINK(sink)->unlocked, 1);
  return TRUE;
}

static gboolean gst_shmring_sink_unlock_stop(GstBaseSink* sink) {
  g_atomic_int_set(&GST_SHMRING_SINK(sink)->unlocked, 0);
  return TRUE;
}

static void gst_shmring_sink_set_property(GObject* object, guint id, const GValue* value,
                                          GParamSpec* pspec) {
  GstShmringSink* self = GST_SHMRING_SINK(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
    case PROP_RING:
      g_free(self->ring);
      self->ring = g_value_dup_string(value);
      break;
    case PROP_SLOTS: {
      const guint n = g_value_get_uint(value);
      if ((n & (n - 1)) != 0) {
        g_warning("shmringsink: slots must be a power of two, not %u; kept %u", n, self->slots);
      } else {
        self->slots = n;
      }
      break;
    }
    case PROP_MODE:
      self->mode = static_cast<GstShmringMode>(g_value_get_enum(value));
      break;
    case PROP_SUBSCRIBERS:
      self->subscribers = g_value_get_uint(value);
      break;
    case PROP_MAX_BYTES:
      self->max_bytes = g_value_get_uint(value);
      break;
    case PROP_CUDA_REGISTER:
      self->cuda_register = g_value_get_boolean(value);
#if !SHMRING_HAVE_CUDA
      if (self->cuda_register) {
        g_warning(
            "shmringsink: cuda-register=true, but this plugin was built without CUDA; "
            "the element will refuse to start");
      }
#endif
      break;
    case PROP_CHECKSUM:
      self->checksum = g_value_get_boolean(value);
      break;
    case PROP_WAIT_SUBSCRIBERS:
      self->wait_subscribers = g_value_get_uint(value);
      break;
    case PROP_WAIT_TIMEOUT:
      self->wait_timeout = g_value_get_uint64(value);
      break;
    case PROP_UNLINK:
      self->unlink_at_stop = g_value_get_boolean(value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_shmring_sink_get_property(GObject* object, guint id, GValue* value,
                                          GParamSpec* pspec) {
  GstShmringSink* self = GST_SHMRING_SINK(object);
  GST_OBJECT_LOCK(self);
  switch (id) {
    case PROP_RING:
      g_value_set_string(value, self->ring);
      break;
    case PROP_SLOTS:
      g_value_set_uint(value, self->slots);
      break;
    case PROP_MODE:
      g_value_set_enum(value, self->mode);
      break;
    case PROP_SUBSCRIBERS:
      g_value_set_uint(value, self->subscribers);
      break;
    case PROP_MAX_BYTES:
      g_value_set_uint(value, self->max_bytes);
      break;
    case PROP_CUDA_REGISTER:
      g_value_set_boolean(value, self->cuda_register);
      break;
    case PROP_CHECKSUM:
      g_value_set_boolean(value, self->checksum);
      break;
    case PROP_WAIT_SUBSCRIBERS:
      g_value_set_uint(value, self->wait_subscribers);
      break;
    case PROP_WAIT_TIMEOUT:
      g_value_set_uint64(value, self->wait_timeout);
      break;
    case PROP_UNLINK:
      g_value_set_boolean(value, self->unlink_at_stop);
      break;
    case PROP_FRAMES:
      g_value_set_uint64(value, self->state ? self->state->frames.load() : 0);
      break;
    case PROP_FRAMES_IN_PLACE:
      g_value_set_uint64(value, self->state ? self->state->in_place.load() : 0);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_shmring_sink_finalize(GObject* object) {
  GstShmringSink* self = GST_SHMRING_SINK(object);
  g_free(self->ring);
  delete self->state;
  G_OBJECT_CLASS(gst_shmring_sink_parent_class)->finalize(object);
}

static void gst_shmring_sink_init(GstShmringSink* self) {
  self->ring = nullptr;
  self->slots = 8;
  self->mode = GST_SHMRING_MODE_AUTO;
  self->subscribers = 4;
  self->max_bytes = 0;
  self->cuda_register = FALSE;
  self->checksum = FALSE;
  self->wait_subscribers = 0;
  self->wait_timeout = 10 * GST_SECOND;
  self->unlink_at_stop = TRUE;
  self->state = nullptr;
  self->unlocked = 0;
  // A sink that only hands buffers on: no clock sync, no preroll to hold.
  gst_base_sink_set_sync(GST_BASE_SINK(self), FALSE);
  // Nor the last buffer (enable-last-sample): a slot buffer kept alive keeps
  // its slot from being written on the ring's next lap (gstshmringpool.hpp).
  gst_base_sink_set_last_sample_enabled(GST_BASE_SINK(self), FALSE);
}

static void gst_shmring_sink_class_init(GstShmringSinkClass* klass) {
  GObjectClass* gobject = G_OBJECT_CLASS(klass);
  GstElementClass* element = GST_ELEMENT_CLASS(klass);
  GstBaseSinkClass* base = GST_BASE_SINK_CLASS(klass);
  GST_DEBUG_CATEGORY_INIT(shmring_sink_debug, "shmringsink", 0, "shmring broadcast ring sink");

  gobject->set_property = gst_shmring_sink_set_property;
  gobject->get_property = gst_shmring_sink_get_property;
  gobject->finalize = gst_shmring_sink_finalize;
  const auto rw = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                           GST_PARAM_MUTABLE_READY);
  g_object_class_install_property(
      gobject, PROP_RING,
      g_param_spec_string("ring", "Ring", "Name of the broadcast ring (in /dev/shm)", nullptr, rw));
  g_object_class_install_property(
      gobject, PROP_SLOTS,
      g_param_spec_uint("slots", "Slots",
                        "Slots of a ring the sink creates, one buffer each (a power of two)", 1,
                        1U << 20, 8, rw));
  g_object_class_install_property(
      gobject, PROP_MODE,
      g_param_spec_enum("mode", "Mode", "Delivery of a ring the sink creates",
                        GST_TYPE_SHMRING_MODE, GST_SHMRING_MODE_AUTO, rw));
  g_object_class_install_property(
      gobject, PROP_SUBSCRIBERS,
      g_param_spec_uint("subscribers", "Subscribers",
                        "How many subscribers a ring the sink creates admits at once", 1, 64, 4,
                        rw));
  g_object_class_install_property(
      gobject, PROP_MAX_BYTES,
      g_param_spec_uint("max-bytes", "Max bytes",
                        "Payload room per slot for caps other than raw video (0: the first "
                        "buffer's size)",
                        0, G_MAXUINT32, 0, rw));
  g_object_class_install_property(
      gobject, PROP_CUDA_REGISTER,
      g_param_spec_boolean("cuda-register", "Register with CUDA",
                           "Register the ring's memory with CUDA (pinned; needs a plugin built "
                           "with CUDA)",
                           FALSE, rw));
  g_object_class_install_property(
      gobject, PROP_CHECKSUM,
      g_param_spec_boolean("checksum", "Checksum",
                           "Store a checksum of each buffer in its slot header", FALSE, rw));
  g_object_class_install_property(
      gobject, PROP_WAIT_SUBSCRIBERS,
      g_param_spec_uint("wait-subscribers", "Wait for subscribers",
                        "Before the first buffer, wait until this many subscribers attached", 0, 64,
                        0, rw));
  g_object_class_install_property(
      gobject, PROP_WAIT_TIMEOUT,
      g_param_spec_uint64("wait-timeout", "Wait timeout",
                          "How long wait-subscribers waits (ns; -1 forever) before an error", 0,
                          G_MAXUINT64, 10 * GST_SECOND, rw));
  g_object_class_install_property(
      gobject, PROP_UNLINK,
      g_param_spec_boolean("unlink", "Unlink",
                           "Remove a ring this sink created when it stops (attached readers "
                           "keep it until they leave)",
                           TRUE, rw));
  g_object_class_install_property(
      gobject, PROP_FRAMES,
      g_param_spec_uint64("frames", "Frames", "Buffers written so far", 0, G_MAXUINT64, 0,
                          static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));
  g_object_class_install_property(
      gobject, PROP_FRAMES_IN_PLACE,
      g_param_spec_uint64("frames-in-place", "Frames in place",
                          "Of the buffers written, those upstream wrote straight into their slot "
                          "(no copy)",
                          0, G_MAXUINT64, 0,
                          static_cast<GParamFlags>(G_PARAM_READABLE | G_PARAM_STATIC_STRINGS)));

  gst_element_class_add_static_pad_template(element, &sink_template);
  gst_element_class_set_static_metadata(
      element, "shmring sink", "Sink/Video",
      "Writes buffers into a shmring broadcast ring for readers in other processes",
      "shmring project");

  base->start = gst_shmring_sink_start;
  base->stop = gst_shmring_sink_stop;
  base->set_caps = gst_shmring_sink_set_caps;
  base->render = gst_shmring_sink_render;
  base->propose_allocation = gst_shmring_sink_propose_allocation;
  base->event = gst_shmring_sink_event;
  base->unlock = gst_shmring_sink_unlock;
  base->unlock_stop = gst_shmring_sink_unlock_stop;
}
