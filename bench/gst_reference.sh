#!/usr/bin/env bash
# A private GStreamer 1.26 runtime in PREFIX, for bench/gst_bench.py's
# unixfdsink/unixfdsrc rows (GStreamer 1.24 and later) on a Debian 12
# system, whose GStreamer is 1.22.
#
#   bench/gst_reference.sh PREFIX        set it up (again: skips what is there)
#   bench/gst_reference.sh --env PREFIX  only print the environment
#
# Debian 13 (trixie) packages GStreamer 1.26.2, built against its glibc
# 2.41, newer than Debian 12's 2.36. So this takes trixie's binary packages
# of GStreamer and of the libraries under it (glibc included) with apt-get
# (a private apt configuration in PREFIX/apt: the system's apt is not
# touched), unpacks them into PREFIX/root, and runs GStreamer's programs
# with trixie's dynamic loader and libraries: PREFIX/bin/gst-launch-1.0 and
# gst-inspect-1.0, and PREFIX/bin/gst-run PROGRAM for any other program
# (bench's gst-latency-probe, built against Debian 12's GStreamer, runs
# under it unchanged, and so does the shmring plugin: both need nothing
# newer than what 1.22 has). Nothing is set in LD_LIBRARY_PATH: the
# system's programs must keep the system's glibc.
#
# Only the plugins the benchmark uses are put on the plugin path
# (PREFIX/plugins): coreelements, videotestsrc, videoconvertscale, app, shm
# (shmsink/shmsrc) and unixfd (unixfdsink/unixfdsrc). The registry is a
# file of its own (PREFIX/registry.bin), and plugins are scanned in the
# process (GST_REGISTRY_FORK=no: the plugin scanner would run under the
# system's loader).
#
# At the end it prints the environment that runs the benchmark under it;
# the shmring plugin is added with GST_PLUGIN_PATH as usual:
#
#   eval "$(bench/gst_reference.sh --env /opt/gst126)"
#   GST_PLUGIN_PATH=build/gst/plugins python3 bench/gst_bench.py \
#       --probe "gst-run build/gst/gst-latency-probe" ...
set -euo pipefail

SUITE=trixie
# The Debian archive the system's apt uses (its main suite's), unless
# GST_REFERENCE_MIRROR names another.
MIRROR=${GST_REFERENCE_MIRROR:-$(apt-cache policy 2>/dev/null |
  awk '$3 ~ /^[a-z]+\/main$/ && $2 ~ /^https?:/ { print $2; exit }')}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# GStreamer's packages (plugins of the -base and -bad sets are unpacked
# whole, only the ones named in PLUGINS are used) and what they link
# against, down to glibc.
PACKAGES=(libgstreamer1.0-0 gstreamer1.0-tools gstreamer1.0-plugins-base
  libgstreamer-plugins-base1.0-0 gstreamer1.0-plugins-bad libgstreamer-plugins-bad1.0-0
  libc6 libglib2.0-0t64 libstdc++6 libgcc-s1 libunwind8 libdw1t64 libelf1t64
  liborc-0.4-0t64 libffi8 libpcre2-8-0 libmount1 libselinux1 libblkid1 zlib1g liblzma5
  libbz2-1.0 libzstd1 libcap2)
PLUGINS=(coreelements videotestsrc videoconvertscale app shm unixfd)

usage() {
  echo "usage: $0 [--env] PREFIX" >&2
  exit 2
}

env_only=0
if [[ ${1:-} == --env ]]; then
  env_only=1
  shift
fi
[[ $# -eq 1 ]] || usage
mkdir -p "$1"
PREFIX=$(cd "$1" && pwd)
LIB=$PREFIX/root/usr/lib/x86_64-linux-gnu

print_env() {
  cat <<EOF
# GStreamer of Debian $SUITE in $PREFIX (add the shmring plugin with GST_PLUGIN_PATH):
export PATH="$PREFIX/bin:\$PATH"
export GST_PLUGIN_SYSTEM_PATH_1_0="$PREFIX/plugins"
export GST_REGISTRY="$PREFIX/registry.bin"
export GST_REGISTRY_FORK=no
EOF
}

if [[ $env_only == 1 ]]; then
  print_env
  exit 0
fi

[[ $(uname -m) == x86_64 ]] || {
  echo "$0: only x86_64 (amd64) is set up here" >&2
  exit 1
}
[[ -r $KEYRING ]] || {
  echo "$0: $KEYRING not found (Debian: debian-archive-keyring)" >&2
  exit 1
}
for tool in apt-get dpkg-deb; do
  command -v $tool >/dev/null || {
    echo "$0: $tool not found (a Debian system is needed)" >&2
    exit 1
  }
done
[[ -n $MIRROR ]] || {
  echo "$0: no Debian archive in apt's sources; set GST_REFERENCE_MIRROR to one" >&2
  exit 1
}

# A private apt: its own sources, lists, cache and an empty dpkg status.
APT=$PREFIX/apt
mkdir -p "$APT/etc/apt/apt.conf.d" "$APT/etc/apt/preferences.d" "$APT/etc/apt/sources.list.d" \
  "$APT/var/lib/apt/lists/partial" "$APT/var/cache/apt/archives/partial" "$APT/var/lib/dpkg" \
  "$PREFIX/debs"
: >"$APT/var/lib/dpkg/status"
echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" >"$APT/etc/apt/sources.list"
cat >"$APT/apt.conf" <<EOF
Dir "$APT/";
Dir::State::status "$APT/var/lib/dpkg/status";
Dir::Etc::trusted.d "/etc/apt/trusted.gpg.d";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Sandbox::User "root";
EOF
export APT_CONFIG=$APT/apt.conf
if [[ ! -d $PREFIX/root/usr/bin ]]; then
  apt-get update -qq
  # apt-get verifies each package against the signed index.
  (cd "$PREFIX/debs" && apt-get download -qq "${PACKAGES[@]}")
  mkdir -p "$PREFIX/root"
  for deb in "$PREFIX"/debs/*.deb; do dpkg-deb -x "$deb" "$PREFIX/root"; done
fi

mkdir -p "$PREFIX/bin" "$PREFIX/plugins"
for plugin in "${PLUGINS[@]}"; do
  ln -sf "$LIB/gstreamer-1.0/libgst$plugin.so" "$PREFIX/plugins/"
done
# gst-run PROGRAM ARGS...: PROGRAM (a path, or a name in the runtime's
# /usr/bin) with the runtime's loader and libraries. exec: the process is
# the program's own (a caller that waits for it gets its CPU time).
cat >"$PREFIX/bin/gst-run" <<EOF
#!/bin/sh
prog=\$1
shift
case \$prog in
*/*) ;;
*) prog=$PREFIX/root/usr/bin/\$prog ;;
esac
exec "$LIB/ld-linux-x86-64.so.2" --library-path "$LIB" "\$prog" "\$@"
EOF
chmod +x "$PREFIX/bin/gst-run"
for tool in gst-launch-1.0 gst-inspect-1.0; do
  printf '#!/bin/sh\nexec "%s" %s "$@"\n' "$PREFIX/bin/gst-run" "$tool" >"$PREFIX/bin/$tool"
  chmod +x "$PREFIX/bin/$tool"
done

# The registry, made once here, so that no run of the benchmark scans.
eval "$(print_env)"
rm -f "$GST_REGISTRY"
for element in videotestsrc videoconvertscale appsrc fakesink shmsink shmsrc unixfdsink unixfdsrc; do
  gst-inspect-1.0 "$element" >/dev/null || {
    echo "$0: the GStreamer in $PREFIX has no element $element" >&2
    exit 1
  }
done
echo "$(gst-launch-1.0 --version | head -1) in $PREFIX" >&2
print_env
