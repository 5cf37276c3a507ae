// shmringsink: writes each buffer into a shmring broadcast ring, one buffer
// per slot (slot_format.hpp), for shmringsrc and other readers in other
// processes. docs/gstreamer.md is the user's page.
#pragma once

#include <gst/base/gstbasesink.h>
#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_SHMRING_SINK (gst_shmring_sink_get_type())
G_DECLARE_FINAL_TYPE(GstShmringSink, gst_shmring_sink, GST, SHMRING_SINK, GstBaseSink)

// Delivery of a ring the sink creates (shmring::Delivery), or auto: lossy
// when upstream is live (a camera must not be slowed by a reader), reliable
// otherwise (a file must reach every reader whole).
enum GstShmringMode { GST_SHMRING_MODE_AUTO, GST_SHMRING_MODE_RELIABLE, GST_SHMRING_MODE_LOSSY };
#define GST_TYPE_SHMRING_MODE (gst_shmring_mode_get_type())
GType gst_shmring_mode_get_type(void);

G_END_DECLS
