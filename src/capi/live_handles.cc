// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "capi/live_handles.h"

#include <cstddef>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "base/mutex.h"
#include "runtime/log.h"

namespace dmareg::internal::LiveHandles {
namespace {

constexpr size_t kShards = 16;

struct Shard {
  Mutex mu;
  absl::flat_hash_set<const void*> live ABSL_GUARDED_BY(mu);
};

// Never destroyed: a handle may be released while the process exits.
Shard& ShardOf(const void* handle) {
  static Shard* shards = new Shard[kShards];
  // Heap blocks are 16-byte aligned; the bits above spread them.
  return shards[(reinterpret_cast<uintptr_t>(handle) >> 4) % kShards];
}

}  // namespace

void Add(const void* handle) {
  Shard& s = ShardOf(handle);
  MutexLock lock(&s.mu);
  s.live.insert(handle);
}

bool Remove(const void* handle, const char* call) {
  {
    Shard& s = ShardOf(handle);
    MutexLock lock(&s.mu);
    if (s.live.erase(handle) == 1) return true;
  }
  Log(LogLevel::kWarn, "%s(%p): not a live handle (released already, or never made); ignored", call,
      handle);
  return false;
}

}  // namespace dmareg::internal::LiveHandles
