#!/usr/bin/env python3
# Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
"""Summarise hooks_bench's JSON output as a markdown table with ratios.

    hooks_bench --benchmark_repetitions=3 --benchmark_format=json > out.json
    python3 tests/bench/compare_hooks.py out.json      # or: ... | compare_hooks.py -

Each figure is the median over the repetitions (ns per operation: the
manually timed call for munmap and free, wall-clock; CPU time otherwise).
Ratios are against libc's own function called past the interposer (the
Unregistered/Libc row of the same size for every munmap row; the Libc row
for free), and against the Explicit row for hits.
"""

import json
import statistics
import sys
from collections import OrderedDict

TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
COUNTERS = ("hooked", "published", "applied")
# Rows in this order, whatever order the (interleaved) run had.
FAMILIES = ("MunmapPage/Unregistered", "MunmapPage/Registered", "MunmapPage/RegisteredApply",
            "Munmap2MiB/Unregistered", "Munmap2MiB/Registered", "Munmap2MiB/RegisteredApply",
            "MunmapRefused", "Free1MiB", "MallocFree64", "HitHot")
MONITORS = ("Libc", "Unsubscribed", "Userfaultfd", "Hooks", "HooksUffd", "Hooks_OutsideSpan",
            "Explicit")


def order(names, known):
    return sorted(names, key=lambda n: known.index(n) if n in known else len(known))


def load(path):
    if path == "-":
        return json.load(sys.stdin)
    with open(path) as f:
        return json.load(f)


def main():
    data = load(sys.argv[1] if len(sys.argv) > 1 else "-")
    runs = OrderedDict()  # group -> variant -> [rows]
    for row in data["benchmarks"]:
        if row.get("run_type") == "aggregate" and row.get("aggregate_name") != "median":
            continue
        if row.get("error_occurred"):
            print(f"skipped {row['name']}: {row.get('error_message', '')}")
            continue
        name = row.get("run_name", row["name"])
        for suffix in ("/manual_time", "/real_time"):
            name = name.removesuffix(suffix)
        group, _, variant = name.rpartition("/")
        runs.setdefault(group, OrderedDict()).setdefault(variant, []).append(row)
    medians = {}
    for group, variants in runs.items():
        key = "cpu_time" if group.endswith(("HitHot", "MallocFree64", "MunmapRefused")) else "real_time"
        for variant, rows in variants.items():
            medians[group, variant] = statistics.median(
                r[key] * TO_NS[r["time_unit"]] for r in rows)
    print("| benchmark | monitor | ns/op | ratio | hooked | published | applied |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for group in order(runs, tuple("BM_" + f for f in FAMILIES)):
        variants = runs[group]
        # Registered memory against unmapping unregistered memory bare.
        parent = group.rpartition("/")[0]
        if group.endswith("HitHot"):
            base = medians.get((group, "Explicit"))
        elif parent:
            base = medians.get((parent + "/Unregistered", "Libc"))
        else:
            base = medians.get((group, "Libc"))
        for variant in order(variants, MONITORS):
            rows = variants[variant]
            ns = medians[group, variant]
            ratio = f"{ns / base:.2f}" if base else "-"
            counters = [statistics.median(r.get(c, 0.0) for r in rows) for c in COUNTERS]
            cells = " | ".join(f"{c:.2f}" for c in counters)
            print(f"| {group} | {variant} | {ns:,.0f} | {ratio} | {cells} |")

if __name__ == "__main__":
    main()
