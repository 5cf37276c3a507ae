#!/usr/bin/env python3
"""PNG plots of a bench/run.sh session, next to its report.md:

  throughput.png  throughput against message size (log-log), shmring and the
                  peers, median with the min-max of the passes as error bars,
                  and the single-core memcpy floor;
  latency.png     the 64 B round-trip latency distribution of each transport
                  (min, p50, p90, p99, p99.9) and the cache-line floor;
  mpmc_grid.png   MPMC messages per second over the producer x consumer grid
                  (64 B, processes), when the session has more than the diagonal;
  broadcast.png   one publisher and N subscribers, shmring's broadcast ring and
                  iceoryx: per-subscriber 64 B and 1 MiB throughput and the 64 B
                  round trip against N, with the cache-line floor.

The figures are those of report.md: slow-phase parts set aside the same way
(report.analyse). Needs matplotlib (bench/run.sh installs it with pip).
"""

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SIZE_BYTES = {"8B": 8, "64B": 64, "4KiB": 4096, "64KiB": 65536, "1MiB": 1 << 20}
SHMRING_COLOURS = ("#08519c", "#3182bd", "#6baed6")
PEER_COLOURS = ("#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


def colour_map():
    """One colour per transport, the same in every plot: blues for shmring."""
    colours, k_shm, k_peer = {}, 0, 0
    for label, _, _ in report.TRANSPORTS:
        if label.startswith("shmring"):
            colours[label] = SHMRING_COLOURS[k_shm % len(SHMRING_COLOURS)]
            k_shm += 1
        else:
            colours[label] = PEER_COLOURS[k_peer % len(PEER_COLOURS)]
            k_peer += 1
    return colours


def title_of(a):
    return f"{a.meta.get('machine', '?')}, {a.meta.get('date', '?')[:10]}"


def plot_throughput(a, path):
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colours = colour_map()
    for label, prefix, _ in report.TRANSPORTS:
        xs, ys, lo, hi = [], [], [], []
        for size, nbytes in SIZE_BYTES.items():
            name = prefix + size
            if name not in a.names:
                continue
            s, _ = a.over_passes(name, "bytes_per_second", 1e-9)
            if s is None:
                continue
            med, mn, mx, _ = s
            xs.append(nbytes)
            ys.append(med)
            lo.append(med - mn)
            hi.append(mx - med)
        if not xs:
            continue
        is_shmring = label.startswith("shmring")
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o" if is_shmring else "s", capsize=3,
                    linewidth=2.2 if is_shmring else 1.3, linestyle="-" if "threads" not in label else ":",
                    color=colours[label], label=label)
    floor_x, floor_y = [], []
    for size in ("64KiB", "1MiB"):
        s, _ = a.over_passes(f"memcpy/{size}", "bytes_per_second", 1e-9)
        if s is not None:
            floor_x.append(SIZE_BYTES[size])
            floor_y.append(s[0])
    if floor_x:
        ax.plot(floor_x, floor_y, "k*", markersize=12, label="single-core memcpy (floor)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(SIZE_BYTES.values()))
    ax.set_xticklabels([s.replace("B", " B").replace("Ki B", " KiB").replace("Mi B", " MiB")
                        for s in SIZE_BYTES])
    ax.set_xlabel("message size")
    ax.set_ylabel("verified payload, GB/s (log)")
    ax.set_title(f"Throughput, one sender and one receiver on two cores ({title_of(a)})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(a, path):
    rows = []
    for label, _, rtt in report.TRANSPORTS:
        if rtt and rtt in a.names:
            rows.append((label, rtt))
    if report.FLOOR in a.names:
        rows.append(("cache-line ping-pong (floor)", report.FLOOR))
    if not rows:
        return False
    keys = (("min_ns", "min"), ("p50_ns", "p50"), ("p90_ns", "p90"), ("p99_ns", "p99"), ("p999_ns", "p99.9"))
    markers = ("|", "o", "^", "s", "D")
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.8))
    colours = colour_map()
    for y, (label, name) in enumerate(reversed(rows)):
        colour = colours.get(label, "black")
        values = []
        for key, _ in keys:
            s, _ = a.over_passes(name, key)
            values.append(None if s is None else s[0])
        present = [v for v in values if v]
        if not present:
            continue
        ax.plot([min(present), max(present)], [y, y], color=colour, linewidth=1.5, alpha=0.6)
        for marker, v in zip(markers, values):
            if v:
                ax.plot([v], [y], marker=marker, color=colour, markersize=7, linestyle="none")
    for (_, tag), marker in zip(keys, markers):
        ax.plot([], [], marker=marker, color="grey", linestyle="none", label=tag)
    ax.legend(fontsize=8, loc="lower right", ncol=5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _ in reversed(rows)], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("round trip, ns (log)")
    ax.set_title(f"64 B round-trip latency distribution ({title_of(a)})")
    ax.grid(True, which="both", axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_grid(a, path):
    cells = {}
    for api in ("copy", "batch"):
        for n in a.names:
            m = re.match(rf"mpmc/process/(\d+)x(\d+)/{api}/64B$", n)
            if m:
                s, _ = a.over_passes(n, "items_per_second", 1e-6)
                if s is not None:
                    cells.setdefault(api, {})[(int(m.group(1)), int(m.group(2)))] = s[0]
    if not cells or all(len({p for p, c in v} | {c for p, c in v}) < 2 for v in cells.values()):
        return False
    fig, axes = plt.subplots(1, len(cells), figsize=(5 * len(cells), 4.6), squeeze=False)
    for ax, (api, grid) in zip(axes[0], sorted(cells.items())):
        counts = sorted({p for p, _ in grid} | {c for _, c in grid})
        data = [[grid.get((p, c), float("nan")) for c in counts] for p in counts]
        im = ax.imshow(data, cmap="viridis", origin="lower")
        for i, p in enumerate(counts):
            for j, c in enumerate(counts):
                if (p, c) in grid:
                    ax.text(j, i, f"{grid[(p, c)]:.3g}", ha="center", va="center", color="white", fontsize=8)
        ax.set_xticks(range(len(counts)))
        ax.set_xticklabels(counts)
        ax.set_yticks(range(len(counts)))
        ax.set_yticklabels(counts)
        ax.set_xlabel("consumers")
        ax.set_ylabel("producers")
        ax.set_title(f"MPMC 64 B, processes, {api} API (M msg/s)", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title_of(a), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_broadcast(a, path):
    counts = sorted({int(m.group(1)) for n in a.names
                     for m in [re.match(r"(?:rtt/)?bcast/.*/(\d+)sub/", n)] if m})
    if not counts:
        return False
    panels = (("64 B, M msg/s per subscriber (log)", "bcast/{p}/{n}sub/64B", "items_per_second", 1e-6, False),
              ("1 MiB, GB/s per subscriber", "bcast/{p}/{n}sub/1MiB", "bytes_per_second", 1e-9, False),
              ("64 B round trip p50, ns (log)", "rtt/bcast/{r}/{n}sub/64B", "p50_ns", 1.0, True))
    colours = dict(zip((label for label, _, _ in report.BROADCAST),
                       (SHMRING_COLOURS[0], SHMRING_COLOURS[1], PEER_COLOURS[0])))
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 4.4))
    for ax, (title, pattern, key, scale, rtt) in zip(axes, panels):
        for label, prefix, rtt_prefix in report.BROADCAST:
            xs, ys, lo, hi = [], [], [], []
            for n in counts:
                name = pattern.format(p=prefix, r=rtt_prefix, n=n)
                s, _ = a.over_passes(name, key, scale) if name in a.names else (None, "")
                if s is None:
                    continue
                med, mn, mx, _ = s
                xs.append(n)
                ys.append(med)
                lo.append(med - mn)
                hi.append(mx - med)
            if xs:
                is_shmring = label.startswith("shmring")
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o" if is_shmring else "s", capsize=3,
                            linewidth=2.2 if is_shmring else 1.3, color=colours[label], label=label)
        if rtt:
            s, _ = a.over_passes(report.FLOOR, "p50_ns") if report.FLOOR in a.names else (None, "")
            if s is not None:
                ax.axhline(s[0], color="black", linestyle=":", label="cache-line ping-pong (floor)")
        if "(log)" in title:
            ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts)
        ax.set_xticklabels(counts)
        ax.set_xlabel("subscribers")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = [], []
    for ax in axes:
        for h, l_ in zip(*ax.get_legend_handles_labels()):
            if l_ not in labels:
                handles.append(h)
                labels.append(l_)
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels))
    fig.suptitle(f"Broadcast, one publisher and N subscriber processes ({title_of(a)})", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("session", help="directory written by bench/run.sh")
    ap.add_argument("--slow-factor", type=float, default=1.3)
    ap.add_argument("--reference-floor", type=float, default=None, metavar="NS")
    ap.add_argument("--mean-factor", type=float, default=2.5)
    args = ap.parse_args()
    a = report.analyse(args.session, args.slow_factor, args.reference_floor, args.mean_factor)
    written = []
    plot_throughput(a, os.path.join(args.session, "throughput.png"))
    written.append("throughput.png")
    if plot_latency(a, os.path.join(args.session, "latency.png")):
        written.append("latency.png")
    if plot_grid(a, os.path.join(args.session, "mpmc_grid.png")):
        written.append("mpmc_grid.png")
    if plot_broadcast(a, os.path.join(args.session, "broadcast.png")):
        written.append("broadcast.png")
    print(f"plots: {', '.join(written)} in {args.session}")


if __name__ == "__main__":
    main()
