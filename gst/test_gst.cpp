// shmringsink and shmringsrc across processes: a gst-launch-1.0 producer
// (videotestsrc ! shmringsink) in a child process and a shmringsrc pipeline
// here. Every frame's content is checked: the sink stores a checksum of each
// frame in its slot header, the source hands it on in its frame meta, and
// the test recomputes it from the bytes it received. Also: caps restored,
// timestamps restored, in-order frame numbers, frames held and freed out of
// order (in place), caps mismatch refused, EOS, a producer killed with
// SIGKILL (an error, not a hang), and a lossy ring under a slow consumer
// (gaps counted, no torn frame). The sink's pool: upstream writing into the
// slots (no copy), buffers from elsewhere copied, pool buffers freed
// unrendered, rendered out of turn, or kept after rendering.
//
// GST_PLUGIN_PATH points at the plugin in the build tree (ctest sets it).
#include <fcntl.h>
#include <gst/gst.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../gst/gstshmringsrc.hpp"
#include "../gst/slot_format.hpp"
#include "shmring/broadcast_view.hpp"
#include "shmring/segment.hpp"
#include "test_support.hpp"

extern char** environ;

namespace shmring {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Generous: a run that needs it has hung, not slowed down.
constexpr GstClockTime kBusTimeout = 30 * GST_SECOND;
constexpr const char* kVideo = "video/x-raw,format=RGB,width=160,height=120,framerate=30/1";

// gst-launch-1.0 with `pipeline` in a child process; its output goes to a
// file that log() reads.
class Launch {
 public:
  explicit Launch(const std::string& pipeline)
      : log_path_("/tmp/shmring_test_gst_" + std::to_string(::getpid()) + "_" +
                  std::to_string(++count_) + ".log") {
    std::vector<std::string> args = {"gst-launch-1.0", "-q"};
    std::istringstream words(pipeline);
    for (std::string w; words >> w;) args.push_back(w);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    const int rc = ::posix_spawnp(&pid_, "gst-launch-1.0", &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    EXPECT_EQ(rc, 0) << "gst-launch-1.0 not found (Debian: gstreamer1.0-tools)";
    if (rc != 0) pid_ = -1;
  }
  ~Launch() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      (void)test::wait_child(pid_);
    }
    ::unlink(log_path_.c_str());
  }
  Launch(const Launch&) = delete;
  Launch& operator=(const Launch&) = delete;

  // Its exit status (-1 if killed).
  int wait() {
    const int rc = test::wait_child(pid_);
    pid_ = -1;
    return rc;
  }
  void kill9() {
    ::kill(pid_, SIGKILL);
    EXPECT_EQ(wait(), -1);
  }
  std::string log() const {
    std::ifstream f(log_path_);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }

 private:
  static inline int count_ = 0;
  std::string log_path_;
  pid_t pid_ = -1;
};

// What the consumer saw of one frame.
struct Seen {
  std::uint64_t frame;
  GstClockTime pts;
  bool checksum_ok;
  bool discont;
  std::uint8_t first_byte;  // of the frame (Feeder: which frame it is)
};

// shmringsrc ! fakesink here, recording every frame (and, with `hold`,
// keeping up to `hold` buffers and freeing them out of order).
class Consumer {
 public:
  explicit Consumer(const std::string& ring, const std::string& src_props = "",
                    std::size_t hold = 0)
      : hold_(hold) {
    const std::string desc = "shmringsrc name=src ring=" + ring +
                             " timeout=30000000000 frame-meta=true " + src_props +
                             " ! fakesink name=out sync=false signal-handoffs=true";
    GError* err = nullptr;
    pipeline_ = gst_parse_launch(desc.c_str(), &err);
    EXPECT_EQ(err, nullptr) << (err ? err->message : "");
    if (err) g_error_free(err);
    GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline_), "out");
    g_signal_connect(sink, "handoff", G_CALLBACK(&Consumer::on_buffer), this);
    gst_object_unref(sink);
    src_ = gst_bin_get_by_name(GST_BIN(pipeline_), "src");
  }
  ~Consumer() {
    gst_element_set_state(pipeline_, GST_STATE_NULL);
    for (GstBuffer* b : held_) gst_buffer_unref(b);
    gst_object_unref(src_);
    gst_object_unref(pipeline_);
  }
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;

  void start() {
    EXPECT_NE(gst_element_set_state(pipeline_, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
  }
  // The first EOS or error on the bus: GST_MESSAGE_EOS or _ERROR (its text
  // in `error`), or 0 after the timeout.
  GstMessageType finish(std::string* error = nullptr) {
    GstBus* bus = gst_element_get_bus(pipeline_);
    GstMessage* m = gst_bus_timed_pop_filtered(
        bus, kBusTimeout, static_cast<GstMessageType>(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
    gst_object_unref(bus);
    if (m == nullptr) return static_cast<GstMessageType>(0);
    const GstMessageType t = GST_MESSAGE_TYPE(m);
    if (t == GST_MESSAGE_ERROR && error) {
      GError* e = nullptr;
      gchar* dbg = nullptr;
      gst_message_parse_error(m, &e, &dbg);
      *error = std::string(e->message) + " / " + (dbg ? dbg : "");
      g_error_free(e);
      g_free(dbg);
    }
    gst_message_unref(m);
    return t;
  }
  std::vector<Seen> seen() {
    const std::lock_guard lock(mu_);
    return seen_;
  }
  std::string caps() {
    const std::lock_guard lock(mu_);
    return caps_;
  }
  std::uint64_t property(const char* name) {
    guint64 v = 0;
    g_object_get(src_, name, &v, nullptr);
    return v;
  }
  // Called in the streaming thread before each frame is recorded.
  std::function<void(const Seen&)> before;

 private:
  static bool checksum_ok(GstBuffer* buf, std::uint64_t& frame) {
    GstCustomMeta* meta = gst_buffer_get_custom_meta(buf, GST_SHMRING_FRAME_META_NAME);
    if (meta == nullptr) return false;
    const GstStructure* s = gst_custom_meta_get_structure(meta);
    guint64 sum = 0;
    gboolean has = FALSE;
    if (!gst_structure_get(s, "frame", G_TYPE_UINT64, &frame, "checksum", G_TYPE_UINT64, &sum,
                           "has-checksum", G_TYPE_BOOLEAN, &has, nullptr) ||
        !has) {
      return false;
    }
    GstMapInfo map;
    if (!gst_buffer_map(buf, &map, GST_MAP_READ)) return false;
    const bool ok = gst::payload_checksum(map.data, map.size) == sum;
    gst_buffer_unmap(buf, &map);
    return ok;
  }

  static void on_buffer(GstElement*, GstBuffer* buf, GstPad* pad, gpointer user) {
    auto* self = static_cast<Consumer*>(user);
    Seen s{};
    s.checksum_ok = checksum_ok(buf, s.frame);
    s.pts = GST_BUFFER_PTS(buf);
    s.discont = GST_BUFFER_FLAG_IS_SET(buf, GST_BUFFER_FLAG_DISCONT);
    gst_buffer_extract(buf, 0, &s.first_byte, 1);
    EXPECT_EQ(GST_BUFFER_OFFSET(buf), s.frame);
    if (self->before) self->before(s);
    const std::lock_guard lock(self->mu_);
    if (self->caps_.empty()) {
      if (GstCaps* c = gst_pad_get_current_caps(pad)) {
        gchar* text = gst_caps_to_string(c);
        self->caps_ = text;
        g_free(text);
        gst_caps_unref(c);
      }
    }
    self->seen_.push_back(s);
    if (self->hold_ == 0) return;
    // Keep the buffer (its slot stays lent), and free a full hand in a
    // shuffled order: the source must give the slots back in order anyway,
    // and none may be rewritten while held.
    self->held_.push_back(gst_buffer_ref(buf));
    if (self->held_.size() < self->hold_) return;
    for (std::size_t i : {std::size_t{1}, self->hold_ - 1, std::size_t{0}}) {
      if (i >= self->held_.size() || self->held_[i] == nullptr) continue;
      std::uint64_t frame = 0;
      EXPECT_TRUE(checksum_ok(self->held_[i], frame)) << "a held frame was rewritten";
      gst_buffer_unref(self->held_[i]);
      self->held_[i] = nullptr;
    }
    for (GstBuffer*& b : self->held_) {
      if (b) gst_buffer_unref(b);
    }
    self->held_.clear();
  }

  std::size_t hold_;
  GstElement* pipeline_ = nullptr;
  GstElement* src_ = nullptr;
  std::mutex mu_;
  std::vector<Seen> seen_;
  std::vector<GstBuffer*> held_;
  std::string caps_;
};

std::string producer(const std::string& ring, int frames, const std::string& sink_props,
                     const std::string& caps = kVideo, const std::string& src_props = "") {
  return "videotestsrc pattern=ball " + src_props + " num-buffers=" + std::to_string(frames) +
         " ! " + caps + " ! shmringsink ring=" + ring + " checksum=true " + sink_props;
}

void expect_every_frame(const std::vector<Seen>& seen, int frames) {
  ASSERT_EQ(seen.size(), static_cast<std::size_t>(frames));
  for (int i = 0; i < frames; ++i) {
    EXPECT_EQ(seen[i].frame, static_cast<std::uint64_t>(i));
    EXPECT_TRUE(seen[i].checksum_ok) << "frame " << i;
    // videotestsrc stamps frame i at i / 30 s; the source restores it.
    EXPECT_EQ(seen[i].pts, gst_util_uint64_scale(i, GST_SECOND, 30)) << "frame " << i;
  }
}

class Gst : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { gst_init(nullptr, nullptr); }
};

TEST_F(Gst, EveryFrameArrivesWholeInOrderWithCapsAndTimestamps) {
  test::UniqueShm ring;
  constexpr int kFrames = 60;
  for (const char* src_props : {"", "copy=true"}) {
    SCOPED_TRACE(src_props);
    Consumer c(ring.name(), src_props);
    c.start();
    Launch p(producer(ring.name(), kFrames, "mode=reliable slots=4 wait-subscribers=1"));
    ASSERT_EQ(c.finish(), GST_MESSAGE_EOS) << p.log();
    EXPECT_EQ(p.wait(), 0) << p.log();
    expect_every_frame(c.seen(), kFrames);
    GstCaps* want = gst_caps_from_string(kVideo);
    GstCaps* got = gst_caps_from_string(c.caps().c_str());
    ASSERT_NE(got, nullptr) << c.caps();
    EXPECT_TRUE(gst_caps_is_subset(got, want)) << c.caps();
    gst_caps_unref(want);
    gst_caps_unref(got);
    EXPECT_EQ(c.property("lost"), 0u);
    EXPECT_FALSE(test::shm_exists(ring.name())) << "the sink removes the ring it made";
  }
}

TEST_F(Gst, BuffersHeldAndFreedOutOfOrderStayWhole) {
  test::UniqueShm ring;
  constexpr int kFrames = 48;
  Consumer c(ring.name(), "", /*hold=*/3);
  c.start();
  Launch p(producer(ring.name(), kFrames, "mode=reliable slots=4 wait-subscribers=1"));
  ASSERT_EQ(c.finish(), GST_MESSAGE_EOS) << p.log();
  EXPECT_EQ(p.wait(), 0) << p.log();
  expect_every_frame(c.seen(), kFrames);
}

TEST_F(Gst, ARingWithOtherCapsIsRefused) {
  test::UniqueShm ring;
  {
    Launch first(producer(ring.name(), 2, "unlink=false"));
    ASSERT_EQ(first.wait(), 0) << first.log();
  }
  ASSERT_TRUE(test::shm_exists(ring.name()));
  Launch other(
      producer(ring.name(), 2, "", "video/x-raw,format=RGB,width=80,height=60,framerate=30/1"));
  EXPECT_NE(other.wait(), 0);
  const std::string log = other.log();
  EXPECT_NE(log.find("carries other caps"), std::string::npos) << log;
  EXPECT_NE(log.find("width=(int)80"), std::string::npos) << log;
  // The same caps again: the ring is reused.
  Launch same(producer(ring.name(), 2, "unlink=false"));
  EXPECT_EQ(same.wait(), 0) << same.log();
}

TEST_F(Gst, AProducerKilledIsAnErrorNotAHang) {
  // Reliable: the source lends slots in place (and waits past the lent ones);
  // lossy: it copies.
  for (const char* mode : {"reliable", "lossy"}) {
    SCOPED_TRACE(mode);
    test::UniqueShm ring(mode);
    Consumer c(ring.name());
    std::mutex mu;
    std::condition_variable cv;
    int frames = 0;
    c.before = [&](const Seen&) {
      const std::lock_guard lock(mu);
      ++frames;
      cv.notify_all();
    };
    c.start();
    // A live producer that never ends by itself.
    Launch p(producer(ring.name(), -1, std::string("wait-subscribers=1 mode=") + mode, kVideo,
                      "is-live=true"));
    {
      std::unique_lock lock(mu);
      ASSERT_TRUE(cv.wait_for(lock, 30s, [&] { return frames >= 3; })) << p.log();
    }
    p.kill9();
    const auto start = Clock::now();
    std::string error;
    ASSERT_EQ(c.finish(&error), GST_MESSAGE_ERROR);
    EXPECT_LT(Clock::now() - start, 10s);
    EXPECT_NE(error.find("died"), std::string::npos) << error;
    for (const Seen& s : c.seen()) EXPECT_TRUE(s.checksum_ok);
  }
}

TEST_F(Gst, ALossyRingLapsASlowConsumerWithoutTornFrames) {
  test::UniqueShm ring;
  constexpr int kFrames = 100;
  constexpr std::uint64_t kSlots = 4;
  Consumer c(ring.name());
  // Slow on the first frame: hold until the producer has written far past
  // it (more than a lap), so the next read is lapped for certain.
  bool waited = false;
  c.before = [&](const Seen&) {
    if (waited) return;
    waited = true;
    Segment s = Segment::open(ring.name());
    const BroadcastView v(s.base(), s.geometry());
    const auto deadline = Clock::now() + 30s;
    while (atomic::load_acquire(&v.producer()->position) < 4 * kSlots && Clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
  };
  c.start();
  Launch p(producer(ring.name(), kFrames,
                    "mode=lossy slots=" + std::to_string(kSlots) + " wait-subscribers=1"));
  ASSERT_EQ(c.finish(), GST_MESSAGE_EOS) << p.log();
  EXPECT_EQ(p.wait(), 0) << p.log();
  const std::vector<Seen> seen = c.seen();
  ASSERT_GE(seen.size(), 2u);
  // The source joined before the first frame (wait-subscribers): frame
  // numbers are ring positions, so every number not seen was missed.
  std::uint64_t gaps = seen.front().frame;
  for (std::size_t i = 0; i < seen.size(); ++i) {
    EXPECT_TRUE(seen[i].checksum_ok) << "torn frame " << seen[i].frame;
    if (i == 0) continue;
    ASSERT_GT(seen[i].frame, seen[i - 1].frame);
    const std::uint64_t gap = seen[i].frame - seen[i - 1].frame - 1;
    gaps += gap;
    EXPECT_EQ(seen[i].discont, gap != 0) << "frame " << seen[i].frame;
  }
  EXPECT_GE(gaps, 4 * kSlots - kSlots - 1) << "the consumer was lapped";
  EXPECT_EQ(c.property("lost"), gaps);
  EXPECT_EQ(c.property("frames"), seen.size());
  EXPECT_EQ(seen.size() + gaps, seen.back().frame + 1);
  EXPECT_EQ(seen.back().frame, static_cast<std::uint64_t>(kFrames - 1)) << "the newest arrives";
}

// A producer pipeline in this process, whose sink's counters can be read
// when it reaches the end of its stream.
class Producer {
 public:
  explicit Producer(const std::string& desc) {
    GError* err = nullptr;
    pipeline_ = gst_parse_launch(desc.c_str(), &err);
    EXPECT_EQ(err, nullptr) << (err ? err->message : "");
    if (err) g_error_free(err);
    if (!GST_IS_BIN(pipeline_)) {  // one element (Feeder): in a pipeline of its own
      GstElement* pipeline = gst_pipeline_new(nullptr);
      gst_bin_add(GST_BIN(pipeline), pipeline_);
      pipeline_ = GST_ELEMENT(gst_object_ref(pipeline));
      gst_object_unref(pipeline);
    }
    sink_ = gst_bin_get_by_name(GST_BIN(pipeline_), "sink");
    EXPECT_NE(gst_element_set_state(pipeline_, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
  }
  ~Producer() {
    gst_element_set_state(pipeline_, GST_STATE_NULL);
    gst_object_unref(sink_);
    gst_object_unref(pipeline_);
  }
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

  // Waits for the end of the stream (true) or an error (false).
  bool finish() {
    GstBus* bus = gst_element_get_bus(pipeline_);
    GstMessage* m = gst_bus_timed_pop_filtered(
        bus, kBusTimeout, static_cast<GstMessageType>(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
    gst_object_unref(bus);
    const bool eos = m && GST_MESSAGE_TYPE(m) == GST_MESSAGE_EOS;
    if (m) gst_message_unref(m);
    return eos;
  }
  std::uint64_t sink_property(const char* name) {
    guint64 v = 0;
    g_object_get(sink_, name, &v, nullptr);
    return v;
  }
  void stop() {
    EXPECT_EQ(gst_element_set_state(pipeline_, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
  }

 protected:
  GstElement* pipeline_ = nullptr;
  GstElement* sink_ = nullptr;
};

TEST_F(Gst, UpstreamDrawsIntoTheSlotsWithoutACopy) {
  // Down to a ring of two slots, one of which the consumer holds.
  for (const char* slots : {"slots=2", "slots=4"}) {
    SCOPED_TRACE(slots);
    test::UniqueShm ring;
    constexpr int kFrames = 60;
    Consumer c(ring.name());
    c.start();
    // videotestsrc draws each frame into a buffer of the pool downstream
    // proposes: the ring's slots.
    Producer p(producer(ring.name(), kFrames,
                        std::string("name=sink mode=reliable wait-subscribers=1 ") + slots));
    ASSERT_TRUE(p.finish());
    EXPECT_EQ(p.sink_property("frames"), static_cast<std::uint64_t>(kFrames));
    // All but the first: the sink makes the ring with the first buffer,
    // which upstream drew before that.
    EXPECT_EQ(p.sink_property("frames-in-place"), static_cast<std::uint64_t>(kFrames - 1));
    ASSERT_EQ(c.finish(), GST_MESSAGE_EOS);
    expect_every_frame(c.seen(), kFrames);
  }
}

TEST_F(Gst, BuffersFromElsewhereAreCopiedOnce) {
  // A tee with two branches, and an element that does not pass the
  // allocation query on: upstream does not get the sink's pool.
  for (const char* between :
       {"tee name=t ! queue ! shmringsink name=sink RING t. ! queue ! fakesink",
        "identity drop-allocation=true ! shmringsink name=sink RING"}) {
    SCOPED_TRACE(between);
    test::UniqueShm ring;
    constexpr int kFrames = 30;
    Consumer c(ring.name());
    c.start();
    std::string desc = "videotestsrc pattern=ball num-buffers=" + std::to_string(kFrames) + " ! " +
                       kVideo + " ! " + between;
    desc.replace(desc.find("RING"), 4,
                 "ring=" + ring.name() + " checksum=true mode=reliable slots=4 wait-subscribers=1");
    Producer p(desc);
    ASSERT_TRUE(p.finish());
    EXPECT_EQ(p.sink_property("frames"), static_cast<std::uint64_t>(kFrames));
    EXPECT_EQ(p.sink_property("frames-in-place"), 0u);
    ASSERT_EQ(c.finish(), GST_MESSAGE_EOS);
    expect_every_frame(c.seen(), kFrames);
  }
}

TEST_F(Gst, AQueueUpstreamOfTheSinkLosesNoFrame) {
  // Upstream acquires while the sink renders, in another thread: the pool
  // lends a slot only while no other buffer of it is out, so the buffers are
  // rendered in the order their slots were claimed (no skip slot).
  test::UniqueShm ring;
  constexpr int kFrames = 120;
  Consumer c(ring.name());
  c.start();
  std::string desc = "videotestsrc pattern=ball num-buffers=" + std::to_string(kFrames) + " ! " +
                     kVideo +
                     " ! queue max-size-buffers=3 ! shmringsink name=sink ring=" + ring.name() +
                     " checksum=true mode=reliable slots=4 wait-subscribers=1";
  Producer p(desc);
  ASSERT_TRUE(p.finish());
  EXPECT_EQ(p.sink_property("frames"), static_cast<std::uint64_t>(kFrames));
  ASSERT_EQ(c.finish(), GST_MESSAGE_EOS);
  expect_every_frame(c.seen(), kFrames);
}

// shmringsink alone, fed by the test through its pad with buffers from the
// pool it proposes, frame k filled with byte k + 1. Frame 0 is pushed at
// once: it makes the ring (and is ordinary memory, copied).
class Feeder : public Producer {
 public:
  explicit Feeder(const std::string& ring)
      : Producer(
            "shmringsink name=sink checksum=true mode=reliable slots=4 wait-subscribers=1 "
            "ring=" +
            ring) {
    pad_ = gst_element_get_static_pad(sink_, "sink");
    GstCaps* caps = gst_caps_from_string(kVideo);
    EXPECT_TRUE(gst_pad_send_event(pad_, gst_event_new_stream_start("feeder")));
    EXPECT_TRUE(gst_pad_send_event(pad_, gst_event_new_caps(caps)));
    GstSegment segment;
    gst_segment_init(&segment, GST_FORMAT_TIME);
    EXPECT_TRUE(gst_pad_send_event(pad_, gst_event_new_segment(&segment)));
    GstQuery* q = gst_query_new_allocation(caps, TRUE);
    EXPECT_TRUE(gst_pad_query(pad_, q));
    EXPECT_GE(gst_query_get_n_allocation_pools(q), 1u) << "the sink proposed no pool";
    if (gst_query_get_n_allocation_pools(q) > 0) {
      guint size = 0;
      guint min = 0;
      guint max = 0;
      gst_query_parse_nth_allocation_pool(q, 0, &pool_, &size, &min, &max);
      GstStructure* config = gst_buffer_pool_get_config(pool_);
      gst_buffer_pool_config_set_params(config, caps, size, min, max);
      EXPECT_TRUE(gst_buffer_pool_set_config(pool_, config));
      EXPECT_TRUE(gst_buffer_pool_set_active(pool_, TRUE));
    }
    gst_query_unref(q);
    gst_caps_unref(caps);
    push(acquire(0));
  }
  ~Feeder() {
    if (pool_) {
      gst_buffer_pool_set_active(pool_, FALSE);
      gst_object_unref(pool_);
    }
    gst_object_unref(pad_);
  }

  // A buffer of the pool, filled as frame `k`.
  GstBuffer* acquire(int k) {
    GstBuffer* buf = nullptr;
    EXPECT_EQ(gst_buffer_pool_acquire_buffer(pool_, &buf, nullptr), GST_FLOW_OK);
    gst_buffer_memset(buf, 0, static_cast<guint8>(k + 1), gst_buffer_get_size(buf));
    GST_BUFFER_PTS(buf) = gst_util_uint64_scale(k, GST_SECOND, 30);
    return buf;
  }
  void push(GstBuffer* buf) { EXPECT_EQ(gst_pad_chain(pad_, buf), GST_FLOW_OK); }
  void end() {
    EXPECT_TRUE(gst_pad_send_event(pad_, gst_event_new_eos()));
    EXPECT_TRUE(finish());
  }

 private:
  GstPad* pad_ = nullptr;
  GstBufferPool* pool_ = nullptr;
};

// The frames the consumer saw are frames `ks` (Feeder's fill), whole, with
// no frame counted lost and no discontinuity: skip slots are no gaps.
void expect_frames(const std::vector<Seen>& seen, const std::vector<int>& ks) {
  ASSERT_EQ(seen.size(), ks.size());
  for (std::size_t i = 0; i < ks.size(); ++i) {
    EXPECT_EQ(seen[i].first_byte, static_cast<std::uint8_t>(ks[i] + 1)) << "frame " << i;
    EXPECT_EQ(seen[i].pts, gst_util_uint64_scale(ks[i], GST_SECOND, 30)) << "frame " << i;
    EXPECT_TRUE(seen[i].checksum_ok) << "frame " << i;
    // (The first is a discontinuity in any case: the stream's start.)
    if (i > 0) {
      EXPECT_FALSE(seen[i].discont) << "frame " << i;
    }
  }
}

TEST_F(Gst, PoolBuffersFreedUnrenderedDoNotWedgeTheRing) {
  test::UniqueShm ring;
  Consumer c(ring.name());
  c.start();
  Feeder f(ring.name());
  // More than the ring's slots, with a third of the slot buffers dropped.
  std::vector<int> pushed = {0};
  for (int k = 1; k < 24; ++k) {
    GstBuffer* buf = f.acquire(k);
    if (k % 3 == 1) {
      gst_buffer_unref(buf);  // never rendered: its claim goes back
    } else {
      f.push(buf);
      pushed.push_back(k);
    }
  }
  EXPECT_EQ(f.sink_property("frames-in-place"), pushed.size() - 1);
  f.end();
  ASSERT_EQ(c.finish(), GST_MESSAGE_EOS);
  expect_frames(c.seen(), pushed);
  EXPECT_EQ(c.property("lost"), 0u);
}

TEST_F(Gst, ABufferRenderedOutOfTurnOrKeptIsNeverOverwritten) {
  test::UniqueShm ring;
  Consumer c(ring.name());
  c.start();
  Feeder f(ring.name());
  // A holds the lent slot; B, acquired while A is out, is ordinary memory.
  // B rendered first: A's slot becomes a skip slot, B is copied after it,
  // and A, rendered later, is copied too.
  GstBuffer* a = f.acquire(1);
  GstBuffer* b = f.acquire(2);
  f.push(b);
  // A is kept after it is rendered, for more than a lap of the ring: its
  // slot is passed over, so its bytes stay frame 1's.
  f.push(gst_buffer_ref(a));
  std::vector<int> pushed = {0, 2, 1};
  for (int k = 3; k < 15; ++k) {
    f.push(f.acquire(k));
    pushed.push_back(k);
  }
  GstMapInfo map;
  ASSERT_TRUE(gst_buffer_map(a, &map, GST_MAP_READ));
  std::size_t changed = 0;
  for (std::size_t i = 0; i < map.size; ++i) changed += map.data[i] != 2;
  gst_buffer_unmap(a, &map);
  EXPECT_EQ(changed, 0u) << "a buffer still held was written";
  gst_buffer_unref(a);
  EXPECT_EQ(f.sink_property("frames"), pushed.size());
  // None: frame 0 made the ring, B and A came out of turn, and while A is
  // kept the pool lends no slot (a buffer of it is out).
  EXPECT_EQ(f.sink_property("frames-in-place"), 0u);
  f.end();
  ASSERT_EQ(c.finish(), GST_MESSAGE_EOS);
  expect_frames(c.seen(), pushed);
  EXPECT_EQ(c.property("lost"), 0u);
}

TEST_F(Gst, BuffersKeptUpstreamAreNeverOverwritten) {
  test::UniqueShm ring;
  Consumer c(ring.name());
  c.start();
  Feeder f(ring.name());  // 4 slots
  // Upstream keeps every buffer it gets: the pool lends the first a slot,
  // then ordinary memory (a buffer of it is out), which goes into the other
  // slots, lap after lap, past the kept one.
  std::vector<GstBuffer*> kept;
  std::vector<int> pushed = {0};
  for (int k = 1; k < 12; ++k) {
    GstBuffer* buf = f.acquire(k);
    kept.push_back(gst_buffer_ref(buf));
    f.push(buf);
    pushed.push_back(k);
  }
  EXPECT_EQ(f.sink_property("frames-in-place"), 1u);
  for (std::size_t i = 0; i < kept.size(); ++i) {
    GstMapInfo map;
    ASSERT_TRUE(gst_buffer_map(kept[i], &map, GST_MAP_READ));
    std::size_t changed = 0;
    for (std::size_t j = 0; j < map.size; ++j) changed += map.data[j] != static_cast<guint8>(i + 2);
    gst_buffer_unmap(kept[i], &map);
    EXPECT_EQ(changed, 0u) << "kept buffer of frame " << i + 1 << " was written";
    gst_buffer_unref(kept[i]);
  }
  f.end();
  ASSERT_EQ(c.finish(), GST_MESSAGE_EOS);
  expect_frames(c.seen(), pushed);
  EXPECT_EQ(c.property("lost"), 0u);
}

TEST_F(Gst, ASlotBufferOutlivesTheSink) {
  test::UniqueShm ring;
  Consumer c(ring.name());
  c.start();
  GstBuffer* buf = nullptr;
  {
    Feeder f(ring.name());
    f.push(f.acquire(1));
    buf = f.acquire(2);  // a slot, claimed, never rendered
    EXPECT_EQ(f.sink_property("frames-in-place"), 1u);
    f.stop();  // the sink ends the stream, gives the claim up, unlinks the ring
  }
  // The buffer still holds the mapping: it can be written and freed.
  gst_buffer_memset(buf, 0, 7, gst_buffer_get_size(buf));
  gst_buffer_unref(buf);
  ASSERT_EQ(c.finish(), GST_MESSAGE_EOS);
  expect_frames(c.seen(), {0, 1});
  EXPECT_FALSE(test::shm_exists(ring.name()));
}

TEST_F(Gst, TheSinkRefusesCudaWithoutCudaAndBadNames) {
  GstElement* sink = gst_element_factory_make("shmringsink", nullptr);
  ASSERT_NE(sink, nullptr) << "plugin not found: is GST_PLUGIN_PATH set?";
  gst_object_unref(sink);
#if !SHMRING_HAVE_CUDA
  test::UniqueShm ring;
  Launch p(producer(ring.name(), 2, "cuda-register=true"));
  EXPECT_NE(p.wait(), 0);
  EXPECT_NE(p.log().find("built without CUDA"), std::string::npos) << p.log();
#endif
  Launch bad("videotestsrc num-buffers=1 ! shmringsink ring=a/b");
  EXPECT_NE(bad.wait(), 0);
  EXPECT_NE(bad.log().find("Bad ring name 'a/b'"), std::string::npos) << bad.log();
}

}  // namespace
}  // namespace shmring
