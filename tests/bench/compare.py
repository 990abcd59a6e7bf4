#!/usr/bin/env python3
# Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
"""Summarise cache_bench's JSON output as a markdown table, dmareg vs UCX.

    cache_bench --benchmark_min_time=0.2 --benchmark_repetitions=5 \\
        --benchmark_enable_random_interleaving=true \\
        --benchmark_format=json > out.json
    python3 tests/bench/compare.py out.json          # or: ... | compare.py -

ns/op: CPU time per operation for the single-threaded workloads (--real:
wall-clock time); for the threaded (MT) workloads the wall-clock time per
operation of all threads together, 1e9 / (items per second), since their
point is throughput.

Repetitions: each figure is the median over them; "±" is half their range
relative to the median. A repetition counts only if its threads actually ran
the whole time (CPU time / wall time >= 0.95 per thread): on a machine shared
with other work a time-sliced repetition measures the other work, not the
cache. When no repetition of a benchmark qualifies, all are used and the row
is flagged. Only the `median` aggregate, if that is all the file has, is used
as is.
"""

import argparse
import json
import statistics
import sys
from collections import OrderedDict

IMPLS = ("Dmareg", "Ucx")
FAMILIES = ("HitHot", "HitRandom", "Miss", "MissChurn", "HitRandomMT", "HitHotMT")

# Goals reported against (see the summary below the tables).
GOAL_HOT_RATIO = 4.0
GOAL_RANDOM_RATIO = 3.0
GOAL_GROWTH = 2.0
GOAL_SCALING = 1.9
GOAL_MISS_RATIO = 1.5         # miss and miss with churn, UCX/dmareg
GOAL_BYTES_PER_REGION = 96    # at 1,000,000 regions
GOAL_DMABUF_IMPORTED = 1.5    # imported dma-buf hit / host hit

MIN_PARALLELISM = 0.95  # per thread
TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def load(path):
    if path == "-":
        return json.load(sys.stdin)
    with open(path) as f:
        return json.load(f)


def parallelism(row):
    """Average number of the benchmark's threads running: CPU time / wall time."""
    real, cpu = row.get("real_time"), row.get("cpu_time")
    return cpu / real if real and cpu is not None else None


def median_spread(values):
    if not values:
        return None, None
    m = statistics.median(values)
    spread = (max(values) - min(values)) / 2 / m if m and len(values) > 1 else None
    return m, spread


def summarise(name, rows, use_real):
    threads = rows[0].get("threads", 1)
    unit = TO_NS.get(rows[0].get("time_unit", "ns"), 1.0)
    clean = [r for r in rows
             if r.get("run_type") == "aggregate"
             or (parallelism(r) or 0) >= MIN_PARALLELISM * threads]
    used = clean or rows
    threaded = threads > 1 or "/real_time" in name

    if threaded:
        per_rep = [1e9 / r["items_per_second"] for r in used if r.get("items_per_second")]
    else:
        key = "real_time" if use_real else "cpu_time"
        per_rep = [r[key] * unit for r in used if isinstance(r.get(key), (int, float))]
    ns, spread = median_spread(per_rep)

    def med(key, scale=1.0):
        vals = [r[key] * scale for r in used if isinstance(r.get(key), (int, float))]
        return statistics.median(vals) if vals else None

    # Paired/* rows: both caches in alternating blocks (cache_bench.cc).
    pair_ratio, pair_ratio_spread = median_spread(
        [r["ratio"] for r in used if isinstance(r.get("ratio"), (int, float))])

    return {
        "ns": ns,
        "spread": spread,
        "reps": len(rows),
        "clean": len(clean),
        "threads": threads,
        "rate": med("items_per_second"),
        # CPU time per operation, all threads together (Google Benchmark sums
        # CPU time over threads and divides by all threads' iterations).
        "cpu_ns": med("cpu_time", unit),
        "parallelism": statistics.median([p for p in map(parallelism, used) if p is not None])
        if any(parallelism(r) is not None for r in used) else None,
        "bytes_per_region": med("bytes_per_region"),
        "regs_per_op": med("regs_per_op"),
        "dmareg_ns": med("dmareg_ns"),
        "ucx_ns": med("ucx_ns"),
        "pair_ratio": pair_ratio,
        "pair_ratio_spread": pair_ratio_spread,
    }


def collect(doc, use_real):
    """run_name -> summary dict (None if every repetition failed)."""
    runs = OrderedDict()
    medians = {}
    for b in doc.get("benchmarks", []):
        name = b.get("run_name", b["name"])
        if b.get("error_occurred"):
            runs.setdefault(name, [])
        elif b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[name] = b
        else:
            runs.setdefault(name, []).append(b)
    for name, b in medians.items():
        if not runs.get(name):
            runs[name] = [b]
    return OrderedDict((name, summarise(name, rows, use_real) if rows else None)
                       for name, rows in runs.items())


def order_key(workload):
    """HitRandomMT/100000/real_time/threads:2 -> (family rank, name, 100000, 2)."""
    parts = workload.split("/")
    family = FAMILIES.index(parts[0]) if parts[0] in FAMILIES else len(FAMILIES)
    arg, threads = 0, 1
    for p in parts[1:]:
        if p.isdigit():
            arg = int(p)
        elif p.startswith("threads:"):
            threads = int(p.split(":")[1])
    return (family, parts[0], arg, threads)


def fmt(v, spec="{:.1f}"):
    return "n/a" if v is None else spec.format(v)


def fmt_ns(r):
    if r is None or r.get("ns") is None:
        return "n/a"
    s = "{:.1f}".format(r["ns"])
    if r.get("spread") is not None:
        s += " ±{:.0f}%".format(100 * r["spread"])
    if r["clean"] == 0:
        s += " (!)"
    return s


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", help="cache_bench --benchmark_format=json output, or - for stdin")
    ap.add_argument("--real", action="store_true",
                    help="wall-clock instead of CPU time for the single-threaded workloads")
    args = ap.parse_args()

    doc = load(args.json)
    res = collect(doc, args.real)
    workloads = {}
    for name, r in res.items():
        impl, _, w = name.partition("/")
        if impl in IMPLS:
            workloads.setdefault(w, {})[impl] = r
    # Canonical order (the run order is random with random interleaving).
    workloads = OrderedDict(sorted(workloads.items(), key=lambda kv: order_key(kv[0])))

    def get(impl, w, key="ns"):
        r = workloads.get(w, {}).get(impl)
        return None if r is None else r.get(key)

    ctx = doc.get("context", {})
    print("cache_bench on {} CPUs at {} MHz, load average {} (UCX: {})".format(
        ctx.get("num_cpus", "?"), fmt(ctx.get("mhz_per_cpu"), "{:.0f}"),
        ", ".join("{:.2f}".format(x) for x in ctx.get("load_avg", [])) or "?",
        ctx.get("ucx", "?")))
    reps = max((r["reps"] for r in res.values() if r), default=0)
    if reps > 1:
        print("Medians over up to {} repetitions (those whose threads ran throughout); "
              "±: half their range; (!): none did, all used.".format(reps))
    print()
    print("| workload | dmareg ns/op | UCX ns/op | ratio (UCX/dmareg) | dmareg Mops/s | UCX Mops/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for w, impls in workloads.items():
        d, u = get("Dmareg", w), get("Ucx", w)
        dr, ur = get("Dmareg", w, "rate"), get("Ucx", w, "rate")
        print("| {} | {} | {} | {} | {} | {} |".format(
            w, fmt_ns(impls.get("Dmareg")), fmt_ns(impls.get("Ucx")),
            fmt(ratio(u, d), "{:.2f}x"),
            fmt(dr and dr / 1e6, "{:.2f}"), fmt(ur and ur / 1e6, "{:.2f}")))

    floor = {w: r for w, r in ((n.partition("/")[2], r) for n, r in res.items()
                               if n.startswith("Memory/")) if r}
    if floor:
        print()
        print("The machine's memory floor (one dependent load per iteration over a random chain):")
        print()
        print("| chain | ns/load |")
        print("|---|---:|")
        for w in sorted(floor, key=order_key):
            print("| {} MiB | {} |".format(w.split("/")[-1], fmt_ns(floor[w])))

    paired = {n.partition("/")[2]: r for n, r in res.items() if n.startswith("Paired/") and r}
    if paired:
        print()
        print("The miss rows again, both caches in one benchmark in alternating blocks of")
        print("1,024 operations (each block starts with the other cache's data in the CPU")
        print("caches); ratio: the median over block pairs, so a drift in the machine's")
        print("speed between repetitions cancels:")
        print()
        print("| workload | dmareg ns/op | UCX ns/op | ratio (UCX/dmareg) |")
        print("|---|---:|---:|---:|")
        for w, r in paired.items():
            spread = r.get("pair_ratio_spread")
            print("| {} | {} | {} | {}{} |".format(
                w, fmt(r.get("dmareg_ns")), fmt(r.get("ucx_ns")), fmt(r.get("pair_ratio"), "{:.2f}x"),
                "" if spread is None else " ±{:.0f}%".format(100 * spread)))

    dmabuf = {n.partition("/")[2]: r for n, r in res.items() if n.startswith("DmaBuf/") and r}
    host_hit = get("Dmareg", "HitHot")
    if dmabuf:
        print()
        print("dma-buf hits (4 KiB inside one cached 1 MiB buffer) against the host hit:")
        print()
        print("| workload | ns/op | / host hit |")
        print("|---|---:|---:|")
        for w in ("HitImported", "HitByFd", "Fstat", "FstatThenHostHit"):
            r = dmabuf.get(w)
            print("| {} | {} | {} |".format(w, fmt_ns(r), fmt(ratio(r and r["ns"], host_hit),
                                                             "{:.2f}x")))

    print()
    print("Hit cost growth with the number of cached regions (ns/op at N / at 1,000):")
    print()
    print("| impl | 1k -> 100k | 1k -> 1M |")
    print("|---|---:|---:|")
    growth = {}
    for impl in IMPLS:
        base = get(impl, "HitRandom/1000")
        growth[impl] = ratio(get(impl, "HitRandom/1000000"), base)
        print("| {} | {} | {} |".format(impl, fmt(ratio(get(impl, "HitRandom/100000"), base),
                                                   "{:.2f}x"), fmt(growth[impl], "{:.2f}x")))

    print()
    print("Scaling from 1 to 2 threads: items/s with 2 threads / with 1, from the")
    print("repetitions where both threads ran throughout (parallelism: CPU time / wall")
    print("time of the 2-thread run, 2.00 = both threads on a CPU the whole time).")
    print()
    print("| workload | dmareg | UCX | dmareg parallelism | UCX parallelism |")
    print("|---|---:|---:|---:|---:|")
    scaling = {}
    for w in ("HitRandomMT/100000", "HitHotMT"):
        cells, pars = [], []
        for impl in IMPLS:
            w1 = "{}/real_time/threads:1".format(w)
            w2 = "{}/real_time/threads:2".format(w)
            scaling[(impl, w)] = ratio(get(impl, w2, "rate"), get(impl, w1, "rate"))
            flag = " (!)" if get(impl, w2, "clean") == 0 or get(impl, w1, "clean") == 0 else ""
            cells.append(fmt(scaling[(impl, w)], "{:.2f}x") + flag)
            pars.append(fmt(get(impl, w2, "parallelism"), "{:.2f}"))
        print("| {} | {} | {} | {} | {} |".format(w, *cells, *pars))

    print()
    print("Memory per cached 4 KiB region (resident-set growth while populating / N;")
    print("at 1,000 regions first allocations and page granularity dominate):")
    print()
    print("| regions | dmareg bytes | UCX bytes |")
    print("|---:|---:|---:|")
    for n in ("1000", "100000", "1000000"):
        w = "HitRandom/" + n
        print("| {:,} | {} | {} |".format(int(n), fmt(get("Dmareg", w, "bytes_per_region"), "{:.0f}"),
                                          fmt(get("Ucx", w, "bytes_per_region"), "{:.0f}")))

    # Sanity: hits must not register, misses must register once.
    odd = []
    for w, impls in workloads.items():
        for impl, r in impls.items():
            if r is None:
                odd.append("{}/{}: failed".format(impl, w))
                continue
            want = 1.0 if w.startswith("Miss") else 0.0
            if r["regs_per_op"] is not None and abs(r["regs_per_op"] - want) > 1e-3:
                odd.append("{}/{}: {:.4f} registrations per op, expected {:.0f}".format(
                    impl, w, r["regs_per_op"], want))

    def verdict(v, goal, higher_is_better=True):
        if v is None:
            return "n/a"
        ok = v >= goal if higher_is_better else v <= goal
        return "{:.2f}x ({}, goal {} {:.1f}x)".format(v, "met" if ok else "NOT met",
                                                       ">=" if higher_is_better else "<=", goal)

    print()
    print("Goals:")
    print()
    print("- hot-region hit, UCX/dmareg: " + verdict(
        ratio(get("Ucx", "HitHot"), get("Dmareg", "HitHot")), GOAL_HOT_RATIO))
    print("- random hit over 100,000 regions, UCX/dmareg: " + verdict(
        ratio(get("Ucx", "HitRandom/100000"), get("Dmareg", "HitRandom/100000")),
        GOAL_RANDOM_RATIO))
    print("- dmareg hit cost 1,000 -> 1,000,000 regions: " + verdict(
        growth.get("Dmareg"), GOAL_GROWTH, higher_is_better=False))
    for w in ("Miss", "MissChurn"):
        pair = (paired.get(w) or {}).get("pair_ratio")
        print("- {}, UCX/dmareg: ".format("miss" if w == "Miss" else "miss with churn") + verdict(
            ratio(get("Ucx", w), get("Dmareg", w)), GOAL_MISS_RATIO) +
            ("" if pair is None else "; in alternating blocks: " + verdict(pair, GOAL_MISS_RATIO)))
    per_region = get("Dmareg", "HitRandom/1000000", "bytes_per_region")
    print("- dmareg bytes per region at 1,000,000: " + (
        "n/a" if per_region is None else "{:.1f} ({}, goal <= {})".format(
            per_region, "met" if per_region <= GOAL_BYTES_PER_REGION else "NOT met",
            GOAL_BYTES_PER_REGION)))
    def dmabuf_ns(w):
        return dmabuf[w]["ns"] if w in dmabuf else None

    print("- dma-buf hit through an import / host hit: " + verdict(
        ratio(dmabuf_ns("HitImported"), host_hit), GOAL_DMABUF_IMPORTED, higher_is_better=False))
    # The bound "the fstat plus a host hit", measured as that sequence (a hit
    # right after a system call misses caches a hot loop's hit does not);
    # the sum of the two separate rows is shown beside it.
    fstat = dmabuf_ns("Fstat")
    by_fd = ratio(dmabuf_ns("HitByFd"), dmabuf_ns("FstatThenHostHit"))
    noise = max((dmabuf.get(w) or {}).get("spread") or 0 for w in ("HitByFd", "FstatThenHostHit"))
    print("- dma-buf hit by fd / (fstat, then a host hit): " + (
        "{:.2f}x (within the rows' ±{:.0f}% of the goal <= 1.0x)".format(by_fd, 100 * noise)
        if by_fd is not None and 1.0 < by_fd <= 1.0 + noise else
        verdict(by_fd, 1.0, higher_is_better=False)) +
        "; against the sum of the separate rows: " + fmt(
            ratio(dmabuf_ns("HitByFd"), fstat + host_hit)
            if fstat is not None and host_hit else None, "{:.2f}x"))
    def measured(w):
        return all(get("Dmareg", "{}/real_time/threads:{}".format(w, t), "clean")
                   for t in (1, 2))

    w = "HitRandomMT/100000"
    print("- dmareg 2-thread scaling, random over 100,000: " + (
        verdict(scaling.get(("Dmareg", w)), GOAL_SCALING) if measured(w) else
        "not measured: the threads never ran in parallel (parallelism {}); "
        "the CPUs were busy with other work".format(
            fmt(get("Dmareg", w + "/real_time/threads:2", "parallelism"), "{:.2f}"))))
    w = "HitHotMT"
    print("- dmareg 2-thread scaling, one hot region (no goal; shared reference count): " + (
        fmt(scaling.get(("Dmareg", w)), "{:.2f}x") if measured(w) else "not measured"))
    if odd:
        print()
        print("Checks that failed:")
        for o in odd:
            print("- " + o)
    return 0


if __name__ == "__main__":
    sys.exit(main())
