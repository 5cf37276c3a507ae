#!/usr/bin/env python3
"""Turns the JSON of a bench/run.sh session into a markdown report.

A session directory holds meta.txt and, for each pass i, the suite cut into
parts, pass-<i>-part-<j>.json (j = 1..K), with a probe of the cache-line
floor before and after every part, pass-<i>-probe-<j>.json (j = 0..K).

A part is flagged as measured in a slow phase when the floor's p50 in the
probe before it, the probe after it, or the part itself exceeds --slow-factor
times the best floor p50 (the session's own best, or --reference-floor if
given). Its measurements are set aside: medians and ranges are taken over the
passes where a benchmark's part was not flagged; a figure marked with a dagger
had no such pass and uses every pass. Ratios are formed within a pass (both
sides unflagged), then summarised over passes.

Standard library only.
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

FLOOR = "floor/cacheline_pingpong/process"
DAGGER = "\u2020"


def strip_suffix(name):
    return re.sub(r"/(real_time|manual_time)$", "", name)


def load_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            print(f"warning: {path}: {e}", file=sys.stderr)
            return None
    benchmarks = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type", "iteration") == "iteration":
            benchmarks[strip_suffix(b["name"])] = b
    return {"context": data.get("context", {}), "benchmarks": benchmarks}


def load_meta(session):
    meta = {}
    path = os.path.join(session, "meta.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    meta[k.strip()] = v.strip()
    return meta


def value(entry, key):
    if entry is None or entry.get("error_occurred"):
        return None
    if key == "mean_ns":
        return entry.get("real_time")  # per iteration, in ns (the default unit)
    return entry.get(key)


def floor_p50(run):
    return None if run is None else value(run["benchmarks"].get(FLOOR), "p50_ns")


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values), len(values)


def fmt(s, scale=1.0, digits=1, significant=False, mark=""):
    """median (min-max); `digits` decimals, or that many significant digits."""
    if s is None:
        return "n/a"
    med, lo, hi, n = s

    def one(v):
        v *= scale
        return f"{v:#.{digits}g}".rstrip(".") if significant else f"{v:.{digits}f}"

    text = one(med) if n == 1 else f"{one(med)} ({one(lo)}-{one(hi)})"
    return text + mark


def load_session(session):
    files = glob.glob(os.path.join(session, "pass-*-part-*.json"))
    layout = {}
    for path in files:
        m = re.search(r"pass-(\d+)-part-(\d+)\.json$", path)
        if m:
            layout.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    passes = []
    for i in sorted(layout):
        probes = {}
        for path in glob.glob(os.path.join(session, f"pass-{i}-probe-*.json")):
            m = re.search(r"probe-(\d+)\.json$", path)
            if m:
                probes[int(m.group(1))] = floor_p50(load_json(path))
        parts = []
        for j in sorted(layout[i]):
            run = load_json(os.path.join(session, f"pass-{i}-part-{j}.json"))
            parts.append({"index": j, "run": run, "before": probes.get(j - 1), "after": probes.get(j),
                          "inside": floor_p50(run)})
        passes.append({"index": i, "parts": parts, "probes": probes})
    return passes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("session", help="directory written by bench/run.sh")
    ap.add_argument("--slow-factor", type=float, default=1.3,
                    help="flag a part whose floor p50 exceeds this times the best (default 1.3)")
    ap.add_argument("--reference-floor", type=float, default=None, metavar="NS",
                    help="the machine's known-good floor p50 in ns, used instead of the session's best, "
                         "so that a session spent wholly in a slow phase is flagged too")
    args = ap.parse_args()

    meta = load_meta(args.session)
    passes = load_session(args.session)
    if not passes:
        sys.exit(f"no pass-<i>-part-<j>.json in {args.session}")

    # ---- slow phases ------------------------------------------------------
    floors = [v for p in passes for part in p["parts"] for v in (part["before"], part["after"], part["inside"])
              if v is not None]
    # A given reference wins: a single lucky probe must not make the limit
    # stricter than the machine's normal fast phase.
    best = args.reference_floor if args.reference_floor is not None else (min(floors) if floors else None)
    limit = None if best is None else args.slow_factor * best

    def is_slow(v):
        return v is not None and limit is not None and v > limit

    names, ctx = [], {}
    for p in passes:
        p["values"] = {}  # name -> (entry, slow)
        for part in p["parts"]:
            part["slow"] = any(is_slow(part[k]) for k in ("before", "after", "inside"))
            if part["run"] is None:
                continue
            ctx = ctx or part["run"]["context"]
            for n, entry in part["run"]["benchmarks"].items():
                p["values"][n] = (entry, part["slow"])
                if n not in names:
                    names.append(n)

    def over_passes(name, key, scale=1.0):
        good = [value(p["values"][name][0], key) for p in passes
                if name in p["values"] and not p["values"][name][1]]
        good = [v * scale for v in good if v is not None]
        if good:
            return summary(good), ""
        every = [value(p["values"][name][0], key) for p in passes if name in p["values"]]
        return summary([v * scale for v in every if v is not None]), DAGGER

    def ratio(num, den):
        good, every = [], []
        for p in passes:
            a, b = p["values"].get(num[0]), p["values"].get(den[0])
            if a is None or b is None:
                continue
            x, y = value(a[0], num[1]), value(b[0], den[1])
            if x is None or not y:
                continue
            every.append(x / y)
            if not a[1] and not b[1]:
                good.append(x / y)
        return (summary(good), "") if good else (summary(every), DAGGER)

    out = []
    w = out.append
    w(f"# shmring benchmarks: {meta.get('machine', ctx.get('host_name', '?'))}")
    w("")
    w(f"- date (UTC): {meta.get('date', ctx.get('date', '?'))}; commit {meta.get('commit', '?')}")
    w(f"- CPU: {meta.get('cpu_model', '?')}, {ctx.get('num_cpus', '?')} CPUs; kernel {meta.get('kernel', '?')}")
    w(f"- pinned CPUs (SHMRING_BENCH_CPUS): {meta.get('cpus', ctx.get('shmring_cpus', '?'))}; "
      f"tick step {ctx.get('shmring_tick_quantum', '?')} TSC ticks")
    w(f"- load average before: {meta.get('load_before', '?')}; after: {meta.get('load_after', '?')}")
    total_parts = sum(len(p["parts"]) for p in passes)
    slow_parts = sum(part["slow"] for p in passes for part in p["parts"])
    w(f"- {len(passes)} passes of {len(passes[0]['parts'])} parts, min_time {meta.get('min_time', '?')} s "
      f"per benchmark; {slow_parts} of {total_parts} parts flagged slow"
      + (f" (floor p50 above {args.slow_factor} x {best:.1f} ns"
         f"{', the reference given' if args.reference_floor is not None else ''})" if best else ""))
    w(f"- figures: median (min-max) over the passes where the benchmark's part was not flagged; "
      f"{DAGGER} = no such pass, every pass used (not trustworthy)")
    failed = sorted({n for p in passes for n, (e, _) in p["values"].items() if e.get("error_occurred")})
    if failed:
        w(f"- **benchmarks that failed in some pass:** {', '.join(failed)}")
    w("")

    w("## Slow-phase probes")
    w("")
    w("Cache-line floor p50 (ns) before the first part, between parts and after the last; "
      "**bold** above the limit.")
    w("")
    w("| pass | probes | parts flagged |")
    w("| --- | --- | --- |")
    for p in passes:
        cells = []
        for j in sorted(p["probes"]):
            v = p["probes"][j]
            cells.append("n/a" if v is None else (f"**{v:.0f}**" if is_slow(v) else f"{v:.0f}"))
        flagged = [str(part["index"]) for part in p["parts"] if part["slow"]]
        w(f"| {p['index']} | {' '.join(cells)} | {len(flagged)}/{len(p['parts'])}"
          f"{' (' + ', '.join(flagged) + ')' if flagged else ''} |")
    w("")

    w("## Targets")
    w("")
    w("| ratio | target | median (min-max) | verdict |")
    w("| --- | --- | --- | --- |")

    def target_row(label, target, r, ok):
        s, mark = r
        verdict = "n/a" if s is None else ("met" if ok(s[0]) else "**missed**")
        w(f"| {label} | {target} | {fmt(s, digits=2, mark=mark)} | {verdict} |")

    for api in ("copy", "zerocopy"):
        name = f"rtt/spsc/process/{api}/64B"
        if name in names:
            target_row(f"{name} p50 / floor p50", "<= 1.5",
                       ratio((name, "p50_ns"), (FLOOR, "p50_ns")), lambda v: v <= 1.5)
    for size in ("64KiB", "1MiB"):
        for placement in ("process", "thread"):
            for api in ("copy", "batch"):
                name = f"spsc/{placement}/{api}/{size}"
                if name in names:
                    target_row(f"{name} bytes/s / memcpy/{size}", ">= 0.5",
                               ratio((name, "bytes_per_second"), (f"memcpy/{size}", "bytes_per_second")),
                               lambda v: v >= 0.5)
    for prefix in ("spsc/process", "spsc/thread", "mpmc/process/1x1", "mpmc/thread/1x1",
                   "mpmc/process/2x2", "mpmc/thread/2x2"):
        b, c = f"{prefix}/batch/8B", f"{prefix}/copy/8B"
        if b in names and c in names:
            target_row(f"{b} / {c} (msg/s)", "clearly > 1 (>= 1.5)",
                       ratio((b, "items_per_second"), (c, "items_per_second")), lambda v: v >= 1.5)
    w("")

    w("## Round-trip latency (ns)")
    w("")
    w("| benchmark | p50 | p99 | p99.9 | mean |")
    w("| --- | ---: | ---: | ---: | ---: |")
    for n in names:
        if n.startswith(("floor/", "rtt/")):
            cells = []
            for key in ("p50_ns", "p99_ns", "p999_ns", "mean_ns"):
                s, mark = over_passes(n, key)
                cells.append(fmt(s, mark=mark))
            w(f"| {n} | {' | '.join(cells)} |")
    w("")

    w("## Bandwidth floor: single-core memcpy")
    w("")
    w("| benchmark | GB/s |")
    w("| --- | ---: |")
    for n in names:
        if n.startswith("memcpy/"):
            s, mark = over_passes(n, "bytes_per_second", 1e-9)
            w(f"| {n} | {fmt(s, digits=3, significant=True, mark=mark)} |")
    w("")

    for kind, title in (("spsc/", "SPSC throughput"), ("mpmc/", "MPMC throughput")):
        rows = [n for n in names if n.startswith(kind)]
        if not rows:
            continue
        w(f"## {title}")
        w("")
        w("| benchmark | M msg/s | GB/s |")
        w("| --- | ---: | ---: |")
        for n in rows:
            s1, m1 = over_passes(n, "items_per_second", 1e-6)
            s2, m2 = over_passes(n, "bytes_per_second", 1e-9)
            w(f"| {n} | {fmt(s1, digits=3, significant=True, mark=m1)} | "
              f"{fmt(s2, digits=3, significant=True, mark=m2)} |")
        w("")

    w("GB/s = 10^9 bytes per second. Throughput counts messages verified by the consumers, from the start "
      "signal until the last one is checked. Latency percentiles come from every round trip of the run.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
