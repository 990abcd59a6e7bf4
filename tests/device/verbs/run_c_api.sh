#!/bin/sh
# Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#
# Runs examples/c_api on the VM harness's RDMA device:
#   run_c_api.sh path/to/c_api
# Outside the VM, with no device, it skips (exit 77, ctest's SKIP_RETURN_CODE);
# inside it (DMAREG_IN_VM=1) a missing device fails.
set -eu
exe=$1
# Like a gtest binary, it leaves its result where GTEST_OUTPUT=xml:DIR/ says,
# so that the device run's checks (every test left a result, none skipped)
# cover it too.
result() { # completed|skipped|failed
  case ${GTEST_OUTPUT:-} in
  xml:*/)
    dir=${GTEST_OUTPUT#xml:}
    mkdir -p "$dir"
    # gtest's form: a failed test ran to completion and carries a <failure>.
    failures=0 r=$1 failure=""
    if [ "$1" = failed ]; then
      failures=1 r=completed failure='<failure message="c_api failed on the device"/>'
    fi
    printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites tests="1" failures="%d" name="AllTests">\n  <testsuite name="ExampleCApi" tests="1" failures="%d">\n    <testcase name="RunsOnTheDevice" status="run" result="%s">%s</testcase>\n  </testsuite>\n</testsuites>\n' \
      "$failures" "$failures" "$r" "$failure" >"${dir}example_c_api.xml"
    ;;
  esac
}
dev=${DMAREG_RXE_DEV:-}
if [ -z "$dev" ]; then
  for d in /sys/class/infiniband/*; do
    [ -e "$d" ] && dev=$(basename "$d") && break
  done
fi
if [ -z "$dev" ] || [ ! -e "/sys/class/infiniband/$dev" ]; then
  if [ "${DMAREG_IN_VM:-}" = 1 ]; then
    echo "run_c_api: DMAREG_IN_VM=1 but no RDMA device ${dev}" >&2
    result failed
    exit 1
  fi
  echo "run_c_api: skipped: no RDMA device; run scripts/vm/run -- ctest -L device"
  result skipped
  exit 77
fi
rc=0
out=$("$exe" "$dev") || rc=$?
echo "$out"
# One miss, one hit on a slice, nothing left after the invalidation.
if [ "$rc" -ne 0 ] || ! echo "$out" | grep -q '^hits 1 misses 1 invalidated 1 live 0$'; then
  echo "run_c_api: c_api $dev exited $rc or printed other counters" >&2
  result failed
  exit 1
fi
result completed
