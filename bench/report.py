#!/usr/bin/env python3
"""Turns the JSON of a bench/run.sh session into a markdown report.

A session directory holds meta.txt and, for each pass i, the suite cut into
parts, pass-<i>-part-<j>.json (j = 1..K), with a probe of the cache-line
floor before and after every part, pass-<i>-probe-<j>.json (j = 0..K).

A part is flagged as measured in a slow phase when the floor's p50 in the
probe before it, the probe after it, or the part itself exceeds --slow-factor
times the best floor p50 (the session's own best, or --reference-floor if
given), or when a neighbouring probe's mean round trip exceeds --mean-factor
times the session's best probe mean, or the reference (other work preempting
the cores). Its
measurements are set aside: medians and ranges are taken over the
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
from types import SimpleNamespace

FLOOR = "floor/cacheline_pingpong/process"
# Two lines, one each way (bench_support.hpp, "the cache-line floor").
FLOOR_TWO_LINES = "floor/two_lines/process"
# Two lines, each word with a 64-byte message in the line before it: the
# floor of a 64 B round trip through two rings of shmring's slot layout.
FLOOR_MESSAGES = "floor/messages_64B/process"
# The same message with a copy of its count word in each of its two lines,
# both polled: the floor of a layout with a sequence word per line.
FLOOR_SPLIT = "floor/split_messages_64B/process"
# The layout of FLOOR_MESSAGES, the reader loading the message's line as it
# polls the word's.
FLOOR_TOUCHED = "floor/touched_messages_64B/process"
DAGGER = "\u2020"
SIZES = ("8B", "64B", "4KiB", "64KiB", "1MiB")

# The transports of the comparison: label, throughput benchmark prefix (the
# size is appended), round-trip benchmark. shmring first, then the peers.
TRANSPORTS = (
    ("shmring SPSC, copy API", "spsc/process/copy/", "rtt/spsc/process/copy/64B"),
    ("shmring SPSC, zero-copy API", "spsc/process/batch/", "rtt/spsc/process/zerocopy/64B"),
    ("iceoryx 2.0 (zero-copy)", "peer/iceoryx/process/", "rtt/iceoryx/process/64B"),
    ("Boost.Interprocess message_queue", "peer/boost_mq/process/", "rtt/boost_mq/process/64B"),
    ("ZeroMQ ipc://", "peer/zeromq/process/", "rtt/zeromq/process/64B"),
    ("Unix domain socket", "peer/unix_socket/process/", "rtt/unix_socket/process/64B"),
    ("pipe", "peer/pipe/process/", "rtt/pipe/process/64B"),
    ("shmring SPSC, copy API, threads", "spsc/thread/copy/", None),
    ("moodycamel ConcurrentQueue, threads", "peer/concurrentqueue/thread/", "rtt/concurrentqueue/thread/64B"),
)


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


def floor_mean(run):
    return None if run is None else value(run["benchmarks"].get(FLOOR), "mean_ns")


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
        probes, means = {}, {}
        for path in glob.glob(os.path.join(session, f"pass-{i}-probe-*.json")):
            m = re.search(r"probe-(\d+)\.json$", path)
            if m:
                run = load_json(path)
                probes[int(m.group(1))] = floor_p50(run)
                means[int(m.group(1))] = floor_mean(run)
        parts = []
        for j in sorted(layout[i]):
            run = load_json(os.path.join(session, f"pass-{i}-part-{j}.json"))
            parts.append({"index": j, "run": run, "before": probes.get(j - 1), "after": probes.get(j),
                          "inside": floor_p50(run), "before_mean": means.get(j - 1),
                          "after_mean": means.get(j)})
        passes.append({"index": i, "parts": parts, "probes": probes, "means": means})
    return passes


def analyse(session, slow_factor, reference_floor, mean_factor=2.5):
    """Loads a session, flags slow parts, and returns what the report and the
    plots read: meta, passes, names, context, the flagging limit, and
    over_passes(name, key, scale) / ratio((name, key), (name, key))."""
    meta = load_meta(session)
    passes = load_session(session)
    if not passes:
        sys.exit(f"no pass-<i>-part-<j>.json in {session}")

    # ---- slow phases ------------------------------------------------------
    floors = [v for p in passes for part in p["parts"] for v in (part["before"], part["after"], part["inside"])
              if v is not None]
    # A given reference wins: a single lucky probe must not make the limit
    # stricter than the machine's normal fast phase.
    best = reference_floor if reference_floor is not None else (min(floors) if floors else None)
    limit = None if best is None else slow_factor * best

    def is_slow(v):
        return v is not None and limit is not None and v > limit

    # Other work on the cores (a build next to the benchmark) leaves the
    # floor's p50 alone but preempts the spinning peers now and then, which
    # the mean round trip shows: flag a part whose neighbouring probe has a
    # mean above mean_factor x the session's best probe mean, or x the
    # reference given: where the two probe threads now and then land on
    # sibling hyperthreads (a 68 ns probe among 250 ns ones), the best mean
    # would flag every normal probe.
    means = [v for p in passes for v in p["means"].values() if v is not None]
    best_mean = reference_floor if reference_floor is not None else (min(means) if means else None)
    mean_limit = None if best_mean is None else mean_factor * best_mean

    def is_contended(v):
        return v is not None and mean_limit is not None and v > mean_limit

    names, ctx = [], {}
    for p in passes:
        p["values"] = {}  # name -> (entry, slow)
        for part in p["parts"]:
            part["slow"] = (any(is_slow(part[k]) for k in ("before", "after", "inside"))
                            or any(is_contended(part[k]) for k in ("before_mean", "after_mean")))
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

    return SimpleNamespace(meta=meta, passes=passes, names=names, ctx=ctx, best=best, limit=limit,
                           is_slow=is_slow, is_contended=is_contended, mean_limit=mean_limit,
                           over_passes=over_passes, ratio=ratio)


# The fan-out transports (bench/fanout_harness.hpp): label, throughput
# prefix (bcast/<prefix>/<N>sub/<size>), round trip (rtt/bcast/<rtt>/<N>sub/64B).
BROADCAST = (
    ("shmring broadcast, copy API", "shmring/copy", "shmring/copy"),
    ("shmring broadcast, zero-copy API", "shmring/batch", "shmring/zerocopy"),
    ("iceoryx 2.0 publish/subscribe", "iceoryx", "iceoryx"),
)


def broadcast_section(w, names, over_passes, ratio, target_row):
    """Tables of the fan-out benchmarks: per-subscriber throughput and round
    trips by subscriber count, then the ratios, each formed inside a pass."""
    counts = sorted({int(m.group(1)) for n in names
                     for m in [re.match(r"(?:rtt/)?bcast/.*/(\d+)sub/", n)] if m})
    if not counts:
        return
    w("## Broadcast: one publisher, N subscriber processes")
    w("")
    w("Every subscriber verifies every message (sequence and content). Throughput is per "
      "subscriber: messages each one received per second, from the publisher's first message "
      "until the last subscriber verified the last. Round trip: 64 B through the fan-out, "
      "subscriber 0 answering over a one-to-one return channel (shmring: an SPSC ring), the other "
      "subscribers reading every ping too. Zero-copy API: batches of up to 32 (4 at 1 MiB).")
    w("")
    tables = (("64 B, M msg/s per subscriber", "64B", "items_per_second", 1e-6, False),
              ("1 MiB, GB/s per subscriber", "1MiB", "bytes_per_second", 1e-9, False),
              ("64 B round trip p50, ns", "64B", "p50_ns", 1.0, True),
              ("64 B round trip p99, ns", "64B", "p99_ns", 1.0, True))
    for title, size, key, scale, rtt in tables:
        w(f"{title}:")
        w("")
        w("| transport | " + " | ".join(f"{n} sub" for n in counts) + " |")
        w("| --- |" + " ---: |" * len(counts))
        for label, prefix, rtt_prefix in BROADCAST:
            cells = []
            for n in counts:
                name = f"rtt/bcast/{rtt_prefix}/{n}sub/{size}" if rtt else f"bcast/{prefix}/{n}sub/{size}"
                if name not in names:
                    cells.append("")
                    continue
                s_, m_ = over_passes(name, key, scale)
                cells.append(fmt(s_, digits=0 if rtt else 3, significant=not rtt, mark=m_))
            if any(cells):
                w(f"| {label} | " + " | ".join(cells) + " |")
        w("")

    w("Broadcast targets (ratios formed inside each pass):")
    w("")
    w("| ratio | target | median (min-max) | verdict |")
    w("| --- | --- | --- | --- |")
    for label, target, r, ok in broadcast_targets(names, ratio, counts):
        target_row(label, target, r, ok)
    w("")


def verdict(target, s, ok):
    """A target row's verdict: n/a without a figure, empty for context rows
    (a target in parentheses), else met or missed by the median."""
    if s is None:
        return "n/a"
    if target.startswith("("):
        return ""
    return "met" if ok(s[0]) else "**missed**"


def broadcast_targets(names, ratio, counts):
    """The fan-out targets, for report.md and bench/broadcast_scaling.py:
    (label, target, (summary, mark), ok) for every ratio whose two benchmarks
    ran. The targets: with 4 subscribers, the copy API's per-subscriber rate
    at least 0.5x its 1-subscriber rate; up to 4 subscribers, at least 20x
    iceoryx's 64 B rate; up to 4 subscribers, a 64 B publisher-to-subscriber
    (one-way) p50 at most 1.5x the cache-line ping-pong's p50, which is a
    round trip. The rest is context, its target in parentheses."""
    rows = []

    def row(label, target, r, ok=lambda v: True):
        rows.append((label, target, r, ok))

    for prefix in ("shmring/copy", "shmring/batch", "iceoryx", "floor/slot/copy", "floor/slot/batch",
                   "floor/cursor/copy", "floor/cursor/batch"):
        for size, key in (("64B", "items_per_second"), ("1MiB", "bytes_per_second")):
            one = f"bcast/{prefix}/1sub/{size}"
            for n in counts:
                many = f"bcast/{prefix}/{n}sub/{size}"
                if n != 1 and one in names and many in names:
                    target = ">= 0.5" if (prefix, size, n) == ("shmring/copy", "64B", 4) else "(info)"
                    row(f"{many} / {one} (per subscriber)", target, ratio((many, key), (one, key)),
                        lambda v: v >= 0.5)
    for prefix in ("shmring/copy", "shmring/batch"):
        for size, key in (("64B", "items_per_second"), ("1MiB", "bytes_per_second")):
            for n in counts:
                mine, theirs = f"bcast/{prefix}/{n}sub/{size}", f"bcast/iceoryx/{n}sub/{size}"
                if mine in names and theirs in names:
                    # 1 MiB: both hand the payload over in place; memory bandwidth
                    # bounds both, so the ratio is context, not a target.
                    target = ">= 20" if size == "64B" and n <= 4 else "(info)"
                    row(f"{mine} / {theirs}", target, ratio((mine, key), (theirs, key)), lambda v: v >= 20)

    # How close the ring comes to the fan-out floor of its own slot layout
    # (bench/fanout_floor.cpp): the part of a miss above that is the ring's.
    for mine, floor in (("shmring/copy", "floor/slot/copy"), ("shmring/batch", "floor/slot/batch")):
        for n in counts:
            a, b = f"bcast/{mine}/{n}sub/64B", f"bcast/{floor}/{n}sub/64B"
            if a in names and b in names:
                row(f"{a} / {b}", "(info)", ratio((a, "items_per_second"), (b, "items_per_second")))

    def halved(r):
        s_, mark = r
        return (None if s_ is None else (2 * s_[0], 2 * s_[1], 2 * s_[2], s_[3])), mark

    for rtt_prefix in ("shmring/copy", "shmring/zerocopy"):
        for n in counts:
            mine = f"rtt/bcast/{rtt_prefix}/{n}sub/64B"
            if mine not in names:
                continue
            if FLOOR in names:
                one_way = ratio((mine, "one_way_p50_ns"), (FLOOR, "p50_ns"))
                if one_way[0] is not None:
                    row(f"{mine} one-way p50 / floor p50", "<= 1.5" if n <= 4 else "(info)", one_way,
                        lambda v: v <= 1.5)
                    # One line transfer is half the ping-pong.
                    row(f"{mine} one-way p50 / (floor p50 / 2)", "(info)", halved(one_way))
                row(f"{mine} round trip p50 / floor p50", "(info)", ratio((mine, "p50_ns"), (FLOOR, "p50_ns")))
            # The SPSC round trip of the same API, same run: what the fan-out adds.
            spsc = "rtt/spsc/process/" + rtt_prefix.split("/")[1] + "/64B"
            if spsc in names:
                row(f"{mine} p50 / {spsc} p50", "(info)", ratio((mine, "p50_ns"), (spsc, "p50_ns")))
            theirs = f"rtt/bcast/iceoryx/{n}sub/64B"
            if theirs in names:
                row(f"{mine} p50 / {theirs} p50", "(info)", ratio((mine, "p50_ns"), (theirs, "p50_ns")))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("session", help="directory written by bench/run.sh")
    ap.add_argument("--slow-factor", type=float, default=1.3,
                    help="flag a part whose floor p50 exceeds this times the best (default 1.3)")
    ap.add_argument("--reference-floor", type=float, default=None, metavar="NS",
                    help="the machine's known-good floor p50 in ns, used instead of the session's best, "
                         "so that a session spent wholly in a slow phase is flagged too")
    ap.add_argument("--mean-factor", type=float, default=2.5,
                    help="also flag a part next to a probe whose mean round trip exceeds this times the "
                         "session's best probe mean, or the reference floor if given (preemption by "
                         "other work; default 2.5)")
    args = ap.parse_args()

    a = analyse(args.session, args.slow_factor, args.reference_floor, args.mean_factor)
    meta, passes, names, ctx, best = a.meta, a.passes, a.names, a.ctx, a.best
    is_slow, over_passes, ratio = a.is_slow, a.over_passes, a.ratio

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
         f"{', the reference given' if args.reference_floor is not None else ''}"
         + (f", or probe mean above {a.mean_limit:.0f} ns" if a.mean_limit else "") + ")" if best else ""))
    w(f"- figures: median (min-max) over the passes where the benchmark's part was not flagged; "
      f"{DAGGER} = no such pass, every pass used (not trustworthy)")
    failed = sorted({n for p in passes for n, (e, _) in p["values"].items() if e.get("error_occurred")})
    if failed:
        w(f"- **benchmarks that failed in some pass:** {', '.join(failed)}")
    w("")

    w("## Slow-phase probes")
    w("")
    w("Cache-line floor p50 (ns) before the first part, between parts and after the last; "
      "**bold** above the limit; \u2021 = its mean round trip above the mean limit (the cores were "
      "shared with other work).")
    w("")
    w("| pass | probes | parts flagged |")
    w("| --- | --- | --- |")
    for p in passes:
        cells = []
        for j in sorted(p["probes"]):
            v = p["probes"][j]
            mark = "\u2021" if a.is_contended(p["means"].get(j)) else ""
            cells.append("n/a" if v is None else (f"**{v:.0f}**" if is_slow(v) else f"{v:.0f}") + mark)
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
        w(f"| {label} | {target} | {fmt(s, digits=2, mark=mark)} | {verdict(target, s, ok)} |")

    # The 64 B round trips against each baseline: the cache-line floor (the
    # target), the floor of two lines each written by one side, as a pair of
    # rings' slots are, and the floor of a 64 B message each way in the slot
    # layout (context), and the plain ring of the same run.
    plain_rtt = "rtt/plain/process/copy/64B"
    for base, label, target, ok in ((FLOOR, "floor", "<= 1.3", lambda v: v <= 1.3),
                                    (FLOOR_TWO_LINES, FLOOR_TWO_LINES, "(info)", lambda v: True),
                                    (FLOOR_MESSAGES, FLOOR_MESSAGES, "(info)", lambda v: True),
                                    (FLOOR_SPLIT, FLOOR_SPLIT, "(info)", lambda v: True),
                                    (FLOOR_TOUCHED, FLOOR_TOUCHED, "(info)", lambda v: True),
                                    (plain_rtt, plain_rtt, "<= 1.0", lambda v: v <= 1.0)):
        if base != FLOOR and base not in names:
            continue
        if base in (FLOOR_TWO_LINES, FLOOR_MESSAGES, FLOOR_SPLIT, FLOOR_TOUCHED):
            target_row(f"{base} p50 / floor p50", "(info)",
                       ratio((base, "p50_ns"), (FLOOR, "p50_ns")), lambda v: True)
        for api in ("copy", "zerocopy", "lowlatency"):
            name = f"rtt/spsc/process/{api}/64B"
            if name in names:
                target_row(f"{name} p50 / {label} p50", target,
                           ratio((name, "p50_ns"), (base, "p50_ns")), ok)
    # The zero-copy path must not be slower than the copy path.
    zc, copy = "rtt/spsc/process/zerocopy/64B", "rtt/spsc/process/copy/64B"
    if zc in names and copy in names:
        target_row(f"{zc} p50 / {copy} p50", "<= 1.0",
                   ratio((zc, "p50_ns"), (copy, "p50_ns")), lambda v: v <= 1.0)
    for size in ("8B", "64B"):
        for api, least in (("copy", 1.0), ("zerocopy", 1.3), ("batch", 3.0)):
            mine, plain = f"spsc/process/{api}/{size}", f"plain/process/copy/{size}"
            if mine in names and plain in names:
                target_row(f"{mine} / {plain} (msg/s)", f">= {least}",
                           ratio((mine, "items_per_second"), (plain, "items_per_second")),
                           lambda v, least=least: v >= least)
    # One shared lane, and one owned lane (one producer, consumers sharing);
    # consumers reading one message a claim, and reading ahead.
    for placement in ("process", "thread"):
        for ring in ("mpmc", "mpmc_lanes"):
            for api in ("copy", "copy_ahead16"):
                mine, spsc = f"{ring}/{placement}/1x1/{api}/64B", f"spsc/{placement}/copy/64B"
                if mine in names and spsc in names:
                    target_row(f"{mine} / {spsc} (msg/s)", ">= 0.8",
                               ratio((mine, "items_per_second"), (spsc, "items_per_second")),
                               lambda v: v >= 0.8)
    if plain_rtt in names:
        target_row(f"{plain_rtt} p50 / floor p50", "(baseline)",
                   ratio((plain_rtt, "p50_ns"), (FLOOR, "p50_ns")), lambda v: True)
    for api, rtt in (("batch", "zerocopy"), ("copy", "copy")):
        mine, theirs = f"spsc/process/{api}/64B", "peer/iceoryx/process/64B"
        if mine in names and theirs in names:
            target_row(f"{mine} / {theirs} (msg/s)", ">= 30",
                       ratio((mine, "items_per_second"), (theirs, "items_per_second")), lambda v: v >= 30)
        mine, theirs = f"rtt/spsc/process/{rtt}/64B", "rtt/iceoryx/process/64B"
        if mine in names and theirs in names:
            target_row(f"{mine} p50 / {theirs} p50", "<= 0.2",
                       ratio((mine, "p50_ns"), (theirs, "p50_ns")), lambda v: v <= 0.2)
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
    # MPMC between threads against moodycamel::ConcurrentQueue, P producers
    # and P consumers on the same cores, timed and checked alike
    # (bench/throughput_harness.hpp). The target is 4x4, the 16-core host's.
    # The ring of one lane, and the ring in lanes (one per producer, as
    # ConcurrentQueue keeps a queue per producer).
    for pairs in (2, 4, 8):
        theirs = f"peer/concurrentqueue/thread/{pairs}x{pairs}/64B"
        for ring in ("mpmc", "mpmc_lanes"):
            for api in ("copy", "copy_ahead16", "batch"):
                mine = f"{ring}/thread/{pairs}x{pairs}/{api}/64B"
                if mine in names and theirs in names:
                    target_row(f"{mine} / {theirs} (msg/s)",
                               ">= 3" if pairs == 4 and api == "copy" else "(info)",
                               ratio((mine, "items_per_second"), (theirs, "items_per_second")),
                               lambda v: v >= 3)
    # The plain MPMC ring (bench/plain_mpmc_ring.hpp, Vyukov's queue with no
    # library around it) and the lanes baseline (bench/plain_lanes_ring.hpp,
    # a lane per producer, as ConcurrentQueue has) against the same
    # baselines, and shmring against them: what the shared-counter algorithm
    # and the per-producer layout get here, and the part of a miss that is
    # shmring's.
    for kind in ("plain_mpmc", "plain_lanes"):
        for pairs in (1, 2, 4, 8):
            for placement in ("process", "thread"):
                plain = f"{kind}/{placement}/{pairs}x{pairs}/copy/64B"
                if plain not in names:
                    continue
                base = (f"spsc/{placement}/copy/64B" if pairs == 1
                        else f"peer/concurrentqueue/thread/{pairs}x{pairs}/64B" if placement == "thread"
                        else None)
                if base is not None and base in names:
                    target_row(f"{plain} / {base} (msg/s)", "(baseline)",
                               ratio((plain, "items_per_second"), (base, "items_per_second")),
                               lambda v: True)
                ring = "mpmc_lanes" if kind == "plain_lanes" else "mpmc"
                mine = f"{ring}/{placement}/{pairs}x{pairs}/copy/64B"
                if mine in names:
                    target_row(f"{mine} / {plain} (msg/s)", "(info)",
                               ratio((mine, "items_per_second"), (plain, "items_per_second")),
                               lambda v: True)
    w("")

    # ---- shmring against the peers -------------------------------------
    present = [t for t in TRANSPORTS if any(t[1] + sz in names for sz in SIZES)]
    if any(t[1].startswith("peer/") for t in present):
        w("## shmring and the peers")
        w("")
        w("One sender, one receiver, pinned to the two CPUs; every message verified. Throughput: "
          "M msg/s for 8 B and 64 B, GB/s from 4 KiB up; one message per call for the peers and for "
          "the copy API, batches of up to 32 for the zero-copy API. Round trip: 64 B, ns.")
        w("")
        w("| transport | " + " | ".join(f"{sz} {'M msg/s' if sz in ('8B', '64B') else 'GB/s'}" for sz in SIZES)
          + " | RTT p50 | RTT p99 | RTT p99.9 |")
        w("| --- |" + " ---: |" * (len(SIZES) + 3))
        for label, prefix, rtt in present:
            cells = []
            for sz in SIZES:
                n = prefix + sz
                if n not in names:
                    cells.append("")
                    continue
                key, scale = ("items_per_second", 1e-6) if sz in ("8B", "64B") else ("bytes_per_second", 1e-9)
                s_, m_ = over_passes(n, key, scale)
                cells.append(fmt(s_, digits=3, significant=True, mark=m_))
            for key in ("p50_ns", "p99_ns", "p999_ns"):
                if rtt is None or rtt not in names:
                    cells.append("")
                else:
                    s_, m_ = over_passes(rtt, key)
                    cells.append(fmt(s_, digits=0, mark=m_))
            w(f"| {label} | " + " | ".join(cells) + " |")
        w("")
        w("Ratios in the same pass, shmring / peer (throughput: higher is better for shmring; "
          "round trip: lower is better). The threaded reference is compared with shmring's threaded copy API.")
        w("")
        w("| peer | 64 B msg/s, copy API | 64 B msg/s, zero-copy API | 4 KiB | 64 KiB | 1 MiB, zero-copy API "
          "| RTT p50, zero-copy API |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, prefix, rtt in present:
            if not prefix.startswith("peer/"):
                continue
            thread = "/thread/" in prefix
            cells = []
            for mine, sz, key in ((("spsc/thread/copy/" if thread else "spsc/process/copy/"), "64B",
                                   "items_per_second"),
                                  ("spsc/process/batch/", "64B", "items_per_second"),
                                  ("spsc/process/batch/", "4KiB", "bytes_per_second"),
                                  ("spsc/process/batch/", "64KiB", "bytes_per_second"),
                                  ("spsc/process/batch/", "1MiB", "bytes_per_second")):
                if thread and mine.startswith("spsc/process/batch/"):
                    mine = "spsc/thread/batch/"
                a, b = mine + sz, prefix + sz
                if a in names and b in names:
                    s_, m_ = ratio((a, key), (b, key))
                    cells.append(fmt(s_, digits=3, significant=True, mark=m_))
                else:
                    cells.append("")
            mine_rtt = "rtt/spsc/process/zerocopy/64B"
            if rtt and rtt in names and mine_rtt in names:
                s_, m_ = ratio((mine_rtt, "p50_ns"), (rtt, "p50_ns"))
                cells.append(fmt(s_, digits=3, significant=True, mark=m_))
            else:
                cells.append("")
            w(f"| {label} | " + " | ".join(cells) + " |")
        w("")

    broadcast_section(w, names, over_passes, ratio, target_row)

    # ---- the MPMC grid -----------------------------------------------------
    grid = {}
    for n in names:
        m = re.match(r"mpmc/(process|thread)/(\d+)x(\d+)/(copy|batch)/64B$", n)
        if m:
            grid.setdefault((m.group(1), m.group(4)), {})[(int(m.group(2)), int(m.group(3)))] = n
    if grid:
        w("## MPMC producer x consumer grid, 64 B (M msg/s)")
        w("")
        for (placement, api), cells_by in sorted(grid.items()):
            counts = sorted({p for p, _ in cells_by} | {c for _, c in cells_by})
            w(f"{placement}es, {api} API: rows producers, columns consumers" if placement == "process"
              else f"{placement}s, {api} API: rows producers, columns consumers")
            w("")
            w("| P \\ C | " + " | ".join(str(c) for c in counts) + " |")
            w("| ---: |" + " ---: |" * len(counts))
            for p_ in counts:
                row = []
                for c_ in counts:
                    n = cells_by.get((p_, c_))
                    if n is None:
                        row.append("")
                    else:
                        s_, m_ = over_passes(n, "items_per_second", 1e-6)
                        row.append(fmt(s_, digits=3, significant=True, mark=m_))
                w(f"| {p_} | " + " | ".join(row) + " |")
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

    for kind, title in (("plain/", "Plain baseline ring throughput"), ("spsc/", "SPSC throughput"),
                        ("mpmc/", "MPMC throughput"), ("peer/", "Peer throughput"),
                        ("bcast/", "Broadcast throughput (per subscriber)")):
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
