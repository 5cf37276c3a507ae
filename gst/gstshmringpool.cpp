#include "gstshmringpool.hpp"

#include <chrono>
#include <cstring>
#include <utility>

#include "shmring/atomic.hpp"
#include "slot_format.hpp"

GST_DEBUG_CATEGORY_STATIC(shmring_pool_debug);
#define GST_CAT_DEFAULT shmring_pool_debug

namespace shmring::gst {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t kHeader = sizeof(SlotHeader);
// An acquire that waits for room (a reliable ring whose slowest reader holds
// every slot) lets go of the ring this often, so that the streaming thread
// and frees get it in between, and a flush is seen.
constexpr auto kWaitSlice = 20ms;

GQuark lease_quark() {
  static const GQuark q = g_quark_from_static_string("GstShmringSlotLease");
  return q;
}

// A slot buffer's memory was freed: the slot may be written again, and a
// claim not rendered goes back to the ring unpublished.
void lease_freed(gpointer data) {
  auto* lease = static_cast<SlotLease*>(data);
  std::shared_ptr<SinkRing> ring = std::move(lease->ring);
  {
    const std::lock_guard lock(ring->mu);
    --ring->live[ring->index(lease->position)];
    if (ring->claim_owner == lease) {
      GST_DEBUG("slot buffer of position %llu freed unrendered: claim given up",
                static_cast<unsigned long long>(lease->position));
      ring->claim.abort();
      ring->claim_owner = nullptr;
    }
  }
  delete lease;
  // `ring` may be the last reference (the sink stopped): it goes here,
  // outside its own mutex.
}

}  // namespace

SlotLease* slot_lease(GstMemory* mem) noexcept {
  return static_cast<SlotLease*>(gst_mini_object_get_qdata(GST_MINI_OBJECT(mem), lease_quark()));
}

void publish_skip(SinkRing& ring, WriteClaim& claim) noexcept {
  SlotHeader h{};
  h.magic = kSlotMagic;
  h.header_size = sizeof(SlotHeader);
  h.version = kSlotVersion;
  h.header_flags = kSkip;
  h.pts = h.dts = h.duration = kNoTime;
  h.frame = claim.position(0);
  h.offset = kNoTime;
  std::byte* slot = claim[0].data();
  if (ring.lossy) {
    store_words(slot, &h, sizeof h);
  } else {
    std::memcpy(slot, &h, sizeof h);
  }
  (void)claim.commit(kHeader);
}

}  // namespace shmring::gst

namespace sg = shmring::gst;

struct GstShmringSlotPool {
  GstBufferPool parent;
  std::shared_ptr<sg::SinkRing>* ring;
  gsize size;  // of the configured buffers
};
struct GstShmringSlotPoolClass {
  GstBufferPoolClass parent_class;
};

G_DEFINE_TYPE(GstShmringSlotPool, gst_shmring_slot_pool, GST_TYPE_BUFFER_POOL)

static gboolean gst_shmring_slot_pool_set_config(GstBufferPool* pool, GstStructure* config) {
  auto* self = reinterpret_cast<GstShmringSlotPool*>(pool);
  GstCaps* caps = nullptr;
  guint size = 0;
  guint min = 0;
  guint max = 0;
  if (!gst_buffer_pool_config_get_params(config, &caps, &size, &min, &max)) return FALSE;
  self->size = size;
  return GST_BUFFER_POOL_CLASS(gst_shmring_slot_pool_parent_class)->set_config(pool, config);
}

// A slot of the ring where one can be lent now; ordinary memory (from the
// parent class, reused) otherwise.
static GstFlowReturn gst_shmring_slot_pool_acquire(GstBufferPool* pool, GstBuffer** out,
                                                   GstBufferPoolAcquireParams* params) {
  auto* self = reinterpret_cast<GstShmringSlotPool*>(pool);
  const std::shared_ptr<sg::SinkRing>& rp = *self->ring;
  sg::SinkRing& r = *rp;
  const bool dontwait = params && (params->flags & GST_BUFFER_POOL_ACQUIRE_FLAG_DONTWAIT);
  std::unique_lock lock(r.mu);
  for (;;) {
    if (r.stopped || r.lossy || r.claim_owner != nullptr || !r.producer || r.out != 0 ||
        self->size != r.frame_size || self->size + sg::kHeader > r.producer.slot_size()) {
      break;
    }
    shmring::WriteClaim c =
        dontwait ? r.producer.try_claim(1) : r.producer.claim(1, sg::kWaitSlice);
    if (c.status() == shmring::Status::ok) {
      const std::size_t index = r.index(c.position(0));
      if (r.live[index] != 0) {
        // A buffer upstream still holds lives in this slot: not this lap.
        publish_skip(r, c);
        continue;
      }
      auto* lease = new sg::SlotLease{rp, c.position(0)};
      GstMemory* mem =
          gst_memory_new_wrapped(static_cast<GstMemoryFlags>(0), c[0].data() + sg::kHeader,
                                 c[0].size() - sg::kHeader, 0, self->size, lease, sg::lease_freed);
      gst_mini_object_set_qdata(GST_MINI_OBJECT(mem), sg::lease_quark(), lease, nullptr);
      ++r.live[index];
      ++r.out;
      r.claim = std::move(c);
      r.claim_owner = lease;
      lock.unlock();
      GstBuffer* buf = gst_buffer_new();
      gst_buffer_append_memory(buf, mem);
      *out = buf;
      return GST_FLOW_OK;
    }
    if (c.status() != shmring::Status::timeout || dontwait) break;  // the sink reports errors
    if (GST_BUFFER_POOL_IS_FLUSHING(pool)) return GST_FLOW_FLUSHING;
    lock.unlock();  // others' turn
    lock.lock();
  }
  // Ordinary memory, counted out like a slot buffer. (Under the ring's
  // mutex: the parent's acquire does not wait, with no limit on buffers.)
  const GstFlowReturn ret =
      GST_BUFFER_POOL_CLASS(gst_shmring_slot_pool_parent_class)->acquire_buffer(pool, out, params);
  if (ret == GST_FLOW_OK) ++r.out;
  return ret;
}

// Every buffer of the pool comes back here when freed (the parent class then
// frees a slot buffer, and keeps an ordinary one for reuse).
static void gst_shmring_slot_pool_release(GstBufferPool* pool, GstBuffer* buffer) {
  auto* self = reinterpret_cast<GstShmringSlotPool*>(pool);
  {
    sg::SinkRing& r = **self->ring;
    const std::lock_guard lock(r.mu);
    --r.out;
  }
  GST_BUFFER_POOL_CLASS(gst_shmring_slot_pool_parent_class)->release_buffer(pool, buffer);
}

static void gst_shmring_slot_pool_finalize(GObject* object) {
  auto* self = reinterpret_cast<GstShmringSlotPool*>(object);
  delete self->ring;
  G_OBJECT_CLASS(gst_shmring_slot_pool_parent_class)->finalize(object);
}

static void gst_shmring_slot_pool_init(GstShmringSlotPool* self) {
  self->ring = nullptr;
  self->size = 0;
}

static void gst_shmring_slot_pool_class_init(GstShmringSlotPoolClass* klass) {
  GST_DEBUG_CATEGORY_INIT(shmring_pool_debug, "shmringpool", 0, "shmringsink slot pool");
  G_OBJECT_CLASS(klass)->finalize = gst_shmring_slot_pool_finalize;
  GstBufferPoolClass* pool = GST_BUFFER_POOL_CLASS(klass);
  pool->set_config = gst_shmring_slot_pool_set_config;
  pool->acquire_buffer = gst_shmring_slot_pool_acquire;
  pool->release_buffer = gst_shmring_slot_pool_release;
  // Slot buffers carry appended memory (GST_BUFFER_FLAG_TAG_MEMORY): the
  // parent's release frees them rather than keeping them, and keeps the
  // ordinary ones for reuse.
}

namespace shmring::gst {

GstBufferPool* slot_pool_new(std::shared_ptr<SinkRing> ring) {
  auto* pool =
      static_cast<GstShmringSlotPool*>(g_object_new(gst_shmring_slot_pool_get_type(), nullptr));
  gst_object_ref_sink(pool);
  pool->ring = new std::shared_ptr<SinkRing>(std::move(ring));
  return GST_BUFFER_POOL(pool);
}

}  // namespace shmring::gst
