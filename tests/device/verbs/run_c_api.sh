#!/bin/sh
# Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#
# Runs examples/c_api on the VM harness's RDMA device:
#   run_c_api.sh path/to/c_api
# Outside the VM, with no device, it skips (exit 77, ctest's SKIP_RETURN_CODE);
# inside it (DMAREG_IN_VM=1) a missing device fails.
set -eu
exe=$1
dev=${DMAREG_RXE_DEV:-}
if [ -z "$dev" ]; then
  for d in /sys/class/infiniband/*; do
    [ -e "$d" ] && dev=$(basename "$d") && break
  done
fi
if [ -z "$dev" ] || [ ! -e "/sys/class/infiniband/$dev" ]; then
  if [ "${DMAREG_IN_VM:-}" = 1 ]; then
    echo "run_c_api: DMAREG_IN_VM=1 but no RDMA device ${dev}" >&2
    exit 1
  fi
  echo "run_c_api: skipped: no RDMA device; run scripts/vm/run -- ctest -L device"
  exit 77
fi
out=$("$exe" "$dev")
echo "$out"
# One miss, one hit on a slice, nothing left after the invalidation.
echo "$out" | grep -q '^hits 1 misses 1 invalidated 1 live 0$'
