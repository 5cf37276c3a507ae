// The shmring GStreamer plugin (libgstshmring.so): shmringsink and
// shmringsrc. docs/gstreamer.md is the user's page.
#include <gst/gst.h>

#include "gstshmringsink.hpp"
#include "gstshmringsrc.hpp"

#ifndef PACKAGE
#define PACKAGE "shmring"
#endif

static gboolean plugin_init(GstPlugin* plugin) {
  // The meta shmringsrc attaches with frame-meta=true (no transform: a
  // buffer derived from it is another frame's business).
  static const gchar* tags[] = {nullptr};
  gst_meta_register_custom(GST_SHMRING_FRAME_META_NAME, tags, nullptr, nullptr, nullptr);
  return gst_element_register(plugin, "shmringsink", GST_RANK_NONE, GST_TYPE_SHMRING_SINK) &&
         gst_element_register(plugin, "shmringsrc", GST_RANK_NONE, GST_TYPE_SHMRING_SRC);
}

GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, shmring,
                  "Video and other buffers through shmring broadcast rings", plugin_init,
                  SHMRING_VERSION, "Apache 2.0", "shmring", "shmring")
