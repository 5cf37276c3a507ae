// shmringsrc: a live source that subscribes to a broadcast ring written by
// shmringsink (slot_format.hpp) in another process and pushes its buffers,
// in place where the ring allows it. docs/gstreamer.md is the user's page.
#pragma once

#include <gst/base/gstpushsrc.h>
#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_SHMRING_SRC (gst_shmring_src_get_type())
G_DECLARE_FINAL_TYPE(GstShmringSrc, gst_shmring_src, GST, SHMRING_SRC, GstPushSrc)

// Where the source joins the stream (shmring::JoinAt).
enum GstShmringJoin { GST_SHMRING_JOIN_NEXT, GST_SHMRING_JOIN_OLDEST, GST_SHMRING_JOIN_NEWEST };
#define GST_TYPE_SHMRING_JOIN (gst_shmring_join_get_type())
GType gst_shmring_join_get_type(void);

// The custom meta each buffer carries: the slot header's frame number and
// checksum (fields "frame", "checksum", "has-checksum"), for checks and
// gap counting downstream. Registered with gst_meta_register_custom.
#define GST_SHMRING_FRAME_META_NAME "GstShmringFrameMeta"

G_END_DECLS
