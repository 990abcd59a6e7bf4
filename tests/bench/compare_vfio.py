#!/usr/bin/env python3
# Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
"""Summarises vfio_bench's JSON (with repetitions) as ratios to the raw ioctls.

    python3 tests/bench/compare_vfio.py native.json vm.json

Rows of later files do not replace rows of earlier ones (scripts/bench
--vfio passes the native fake-kernel rows first, then the VM's).
"""
import json
import sys


def medians(path):
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") == "median":
            scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3}[b["time_unit"]]
            out[b["run_name"]] = b["real_time"] * scale  # microseconds
    return out


def main():
    m = {}
    for path in sys.argv[1:]:
        for k, v in medians(path).items():
            m.setdefault(k, v)
    print("| size | raw ioctls µs | VfioDomain µs | domain / raw | DmaMap µs | DmaMap / raw |")
    print("|---:|---:|---:|---:|---:|---:|")
    sizes = sorted({int(k.split("/")[1]) for k in m if k.startswith("BM_RawMapUnmap/")})
    for s in sizes:
        raw, dom, dm = (m.get(f"BM_{n}/{s}") for n in ("RawMapUnmap", "DomainMapUnmap", "DmaMapUnmap"))
        if None in (raw, dom, dm):
            continue
        label = f"{s >> 20} MiB" if s >= 1 << 20 else f"{s >> 10} KiB"
        print(f"| {label} | {raw:.1f} | {dom:.1f} | {dom / raw:.3f} | {dm:.1f} | {dm / raw:.3f} |")
    for name in ("BM_HitVfio", "BM_HitVerbs", "BM_FakeKernelMapUnmap", "BM_DomainOverFakeKernel",
                 "BM_DmaMapOverFakeKernel"):
        if name in m:
            print(f"{name}: {m[name] * 1000:.1f} ns")
    if "BM_HitVfio" in m and "BM_HitVerbs" in m:
        print(f"hit over VFIO / hit over verbs: {m['BM_HitVfio'] / m['BM_HitVerbs']:.3f}")
    if "BM_FakeKernelMapUnmap" in m and "BM_DomainOverFakeKernel" in m:
        added = (m["BM_DomainOverFakeKernel"] - m["BM_FakeKernelMapUnmap"]) * 1000
        print(f"what VfioDomain adds to a 4 KiB map+unmap, natively: {added:.0f} ns")
    if "BM_DomainOverFakeKernel" in m and "BM_DmaMapOverFakeKernel" in m:
        added = (m["BM_DmaMapOverFakeKernel"] - m["BM_DomainOverFakeKernel"]) * 1000
        print(f"what the registry's DmaMap adds to that, natively: {added:.0f} ns")


if __name__ == "__main__":
    main()
