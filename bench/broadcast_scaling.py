#!/usr/bin/env python3
"""Summarises a bench/broadcast_scaling.sh run: one bench/run.sh session per
build, their passes interleaved, into broadcast_scaling.md and
broadcast_scaling.json.

Per build: the fan-out at 64 B for every subscriber count measured
(messages per second per subscriber, copy API one message a call, zero-copy
API in batches, iceoryx where it ran), the idle counters that tell who waits
on whom, the round trip, the SPSC ring for context, the cache-line floor
probed before, between and after the parts, and the scaling targets. With
two builds or more, each later build against the first and against the one
before it: ratios formed pass by pass (pass i of one build ran next to pass
i of the other), then summarised.

Slow phases are set aside exactly as in report.md (report.analyse): a
figure marked with a dagger had no unflagged pass. Standard library only.

    bench/broadcast_scaling.py OUT     (OUT/<build>/ sessions, OUT/meta.txt)
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

COUNTS = (1, 2, 4, 8)
# label, throughput prefix (bcast/<prefix>/<N>sub/64B), round trip prefix.
TRANSPORTS = (
    ("shmring copy API, 1 message a call", "shmring/copy", "shmring/copy"),
    ("shmring zero-copy API, batches", "shmring/batch", "shmring/zerocopy"),
    ("iceoryx publish/subscribe", "iceoryx", "iceoryx"),
    # The fan-out floors (fanout_floor.cpp): no library, the lines only.
    ("floor, shmring's slot layout, 1 message a call", "floor/slot/copy", "floor/slot/copy"),
    ("floor, shmring's slot layout, batches", "floor/slot/batch", "floor/slot/zerocopy"),
    ("floor, packed payloads and a head line, 1 message a call", "floor/cursor/copy", "floor/cursor/copy"),
    ("floor, packed payloads and a head line, batches", "floor/cursor/batch", "floor/cursor/zerocopy"),
)
IDLE_KEYS = ("publisher_idle_per_msg", "subscriber_idle_per_msg")
# One-to-one, for context: the round trip's return channel.
SPSC = (("spsc/process/copy/64B", "items_per_second", 1e-6, "M msg/s"),
        ("rtt/spsc/process/copy/64B", "p50_ns", 1.0, "p50 ns"))


def throughput(prefix, n):
    return f"bcast/{prefix}/{n}sub/64B"


def round_trip(prefix, n):
    return f"rtt/bcast/{prefix}/{n}sub/64B"


def as_dict(s, mark):
    if s is None:
        return None
    med, lo, hi, n = s
    return {"median": med, "min": lo, "max": hi, "passes": n, "every_pass_slow": mark != ""}


def per_pass(a, name, key):
    """The value of every pass (None where it is missing or failed), and
    whether that pass's part was flagged slow."""
    out = []
    for p in a.passes:
        e = p["values"].get(name)
        out.append((None, True) if e is None else (report.value(e[0], key), e[1]))
    return out


def targets(a):
    """The fan-out targets (report.broadcast_targets): (label, target, (summary, mark), ok)."""
    return report.broadcast_targets(a.names, a.ratio, COUNTS)


def build_summary(name, a):
    benchmarks = {}
    for label, prefix, rtt_prefix in TRANSPORTS:
        for n in COUNTS:
            for bench, keys in ((throughput(prefix, n), ("items_per_second",) + IDLE_KEYS),
                                (round_trip(rtt_prefix, n),
                                 ("p50_ns", "p99_ns", "one_way_p50_ns", "one_way_min_ns", "one_way_skewed"))):
                if bench not in a.names:
                    continue
                benchmarks[bench] = {
                    key: dict(as_dict(*a.over_passes(bench, key)) or {},
                              values=[v for v, _ in per_pass(a, bench, key)])
                    for key in keys}
    for bench, key, _, _ in SPSC:
        if bench in a.names:
            benchmarks[bench] = {key: dict(as_dict(*a.over_passes(bench, key)) or {},
                                           values=[v for v, _ in per_pass(a, bench, key)])}
    if report.FLOOR in a.names:
        benchmarks[report.FLOOR] = {"p50_ns": dict(as_dict(*a.over_passes(report.FLOOR, "p50_ns")) or {},
                                                   values=[v for v, _ in per_pass(a, report.FLOOR, "p50_ns")])}
    probes = [[p["probes"][j] for j in sorted(p["probes"])] for p in a.passes]
    return {
        "meta": a.meta,
        "floor_probes_p50_ns": probes,
        "parts_flagged_slow": sum(part["slow"] for p in a.passes for part in p["parts"]),
        "parts": sum(len(p["parts"]) for p in a.passes),
        "benchmarks": benchmarks,
        "targets": [{"ratio": label, "target": target, **(as_dict(*r) or {}), "verdict": report.verdict(target, r[0], ok)}
                    for label, target, r, ok in targets(a)],
    }


def paired(base, other, name, key):
    """Ratios other / base formed pass by pass (both unflagged, else every
    pass with both values, marked), summarised."""
    good, every = [], []
    for (x, xs), (y, ys) in zip(per_pass(other, name, key), per_pass(base, name, key)):
        if x is None or not y:
            continue
        every.append(x / y)
        if not xs and not ys:
            good.append(x / y)
    return (report.summary(good), "") if good else (report.summary(every), report.DAGGER)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the directory bench/broadcast_scaling.sh wrote")
    ap.add_argument("--builds", required=True, help="comma-separated build names, the first the baseline")
    ap.add_argument("--slow-factor", type=float, default=1.3)
    ap.add_argument("--reference-floor", type=float, default=None, metavar="NS")
    args = ap.parse_args()

    builds = args.builds.split(",")
    analysed = {b: report.analyse(os.path.join(args.out, b), args.slow_factor, args.reference_floor)
                for b in builds}
    meta = report.load_meta(args.out)
    result = {"meta": meta, "builds": {b: build_summary(b, analysed[b]) for b in builds}, "comparison": []}

    out = []
    w = out.append
    w(f"# Broadcast fan-out scaling: {meta.get('machine', '?')}")
    w("")
    w(f"- date (UTC): {meta.get('date', '?')}; CPU: {meta.get('cpu_model', '?')}; "
      f"kernel {meta.get('kernel', '?')}; pinned CPUs {meta.get('cpus', '?')}")
    w(f"- {meta.get('reps', '?')} passes per build, interleaved ({meta.get('order', '?')}); "
      f"min_time {meta.get('min_time', '?')} s; load before {meta.get('load_before', '?')}, "
      f"after {meta.get('load_after', '?')}")
    for b in builds:
        w(f"- build `{b}`: {meta.get('build_' + b, '?')}")
    w(f"- figures: median (min-max) over the passes whose part was not flagged slow (floor p50 above "
      f"{args.slow_factor} x the session's best, as report.md); {report.DAGGER} = every pass flagged")
    w("")

    for b in builds:
        a = analysed[b]
        s = result["builds"][b]
        w(f"## `{b}`")
        w("")
        w(f"Floor probes (cache-line ping-pong p50, ns; before the first part, between parts, after "
          f"the last), {s['parts_flagged_slow']} of {s['parts']} parts flagged slow:")
        w("")
        for i, probes in enumerate(s["floor_probes_p50_ns"], 1):
            w(f"- pass {i}: " + " ".join("n/a" if v is None else f"{v:.0f}" for v in probes))
        w("")
        counts = [n for n in COUNTS if any(throughput(p, n) in a.names for _, p, _ in TRANSPORTS)]
        header = "| | " + " | ".join(f"{n} sub" for n in counts) + " |"
        rule = "| --- |" + " ---: |" * len(counts)
        for title, key, scale, digits, significant, rtt in (
                ("64 B, M msg/s per subscriber", "items_per_second", 1e-6, 3, True, False),
                ("publisher found the ring full, per message", "publisher_idle_per_msg", 1.0, 3, False, False),
                ("subscribers found it empty, per message (mean of the subscribers)",
                 "subscriber_idle_per_msg", 1.0, 3, False, False),
                ("64 B publisher -> subscriber latency (one way) p50, ns", "one_way_p50_ns", 1.0, 0,
                 False, True),
                ("64 B round trip p50, ns", "p50_ns", 1.0, 0, False, True),
                ("64 B round trip p99, ns", "p99_ns", 1.0, 0, False, True)):
            w(f"{title}:")
            w("")
            w(header)
            w(rule)
            for label, prefix, rtt_prefix in TRANSPORTS:
                if not rtt and key != "items_per_second" and prefix == "iceoryx":
                    continue  # iceoryx's subscribers wait in its own calls: no idle counts
                cells = []
                for n in counts:
                    name = round_trip(rtt_prefix, n) if rtt else throughput(prefix, n)
                    if name not in a.names:
                        cells.append("")
                        continue
                    s_, m_ = a.over_passes(name, key, scale)
                    cells.append(report.fmt(s_, digits=digits, significant=significant, mark=m_))
                if any(cells):
                    w(f"| {label} | " + " | ".join(cells) + " |")
            w("")
        spsc = [(bench, key, scale, unit) for bench, key, scale, unit in SPSC if bench in a.names]
        if spsc or report.FLOOR in a.names:
            w("One to one, for context (SPSC ring, one message a call; the round trip's return channel):")
            w("")
            w("| benchmark | figure | median (min-max) |")
            w("| --- | --- | ---: |")
            for bench, key, scale, unit in spsc + [(report.FLOOR, "p50_ns", 1.0, "p50 ns")]:
                if bench in a.names:
                    s_, m_ = a.over_passes(bench, key, scale)
                    w(f"| {bench} | {unit} | {report.fmt(s_, digits=3, significant=True, mark=m_)} |")
            w("")
        w("Targets (ratios formed inside each pass):")
        w("")
        w("| ratio | target | median (min-max) | verdict |")
        w("| --- | --- | --- | --- |")
        for label, target, r, ok in targets(a):
            w(f"| {label} | {target} | {report.fmt(r[0], digits=2, mark=r[1])} | {report.verdict(target, r[0], ok)} |")
        w("")

    # Each later build against the first, and against the one before it.
    pairs = [(builds[0], b) for b in builds[1:]] + [(builds[i - 1], builds[i]) for i in range(2, len(builds))]
    for base, b in pairs:
        w(f"## `{b}` / `{base}`")
        w("")
        w("Each ratio formed pass by pass (pass i of the two builds ran one after the other), then "
          "summarised; throughput above 1 and round trips below 1 are better.")
        w("")
        w("| benchmark | figure | " + f"`{base}` | `{b}` | ratio |")
        w("| --- | --- | ---: | ---: | ---: |")
        rows = [(name, key, scale, unit)
                for _, prefix, rtt_prefix in TRANSPORTS if prefix != "iceoryx"  # the same peer in both
                for n in COUNTS
                for name, key, scale, unit in ((throughput(prefix, n), "items_per_second", 1e-6, "M msg/s"),
                                               (round_trip(rtt_prefix, n), "p50_ns", 1.0, "p50 ns"))]
        for name, key, scale, unit in rows + list(SPSC):
            if name not in analysed[base].names or name not in analysed[b].names:
                continue
            r = paired(analysed[base], analysed[b], name, key)
            x, y = analysed[base].over_passes(name, key, scale), analysed[b].over_passes(name, key, scale)
            w(f"| {name} | {unit} | {report.fmt(x[0], digits=3, significant=True, mark=x[1])} | "
              f"{report.fmt(y[0], digits=3, significant=True, mark=y[1])} | "
              f"{report.fmt(r[0], digits=2, mark=r[1])} |")
            result["comparison"].append({"baseline": base, "build": b, "benchmark": name, "key": key,
                                         "ratio": as_dict(*r)})
        w("")

    with open(os.path.join(args.out, "broadcast_scaling.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    with open(os.path.join(args.out, "broadcast_scaling.json"), "w") as f:
        json.dump(result, f, indent=1, default=lambda v: None)
    print("\n".join(out))


if __name__ == "__main__":
    main()
