// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
//
// Whether this build runs under a sanitizer that replaces glibc's malloc
// (ASan, TSan): then free() keeps blocks in a quarantine instead of
// unmapping them, and tests about glibc's own munmap have nothing to see.
// And whether it is TSan, which cannot start a thread in the child of a
// process that had threads when it forked.

#ifndef DMAREG_TESTS_COMMON_SANITIZERS_H_
#define DMAREG_TESTS_COMMON_SANITIZERS_H_

namespace dmareg::testing {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kGlibcMalloc = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kGlibcMalloc = false;
#else
inline constexpr bool kGlibcMalloc = true;
#endif
#else
inline constexpr bool kGlibcMalloc = true;
#endif

#if defined(__SANITIZE_THREAD__)
inline constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kThreadSanitizer = true;
#else
inline constexpr bool kThreadSanitizer = false;
#endif
#else
inline constexpr bool kThreadSanitizer = false;
#endif

}  // namespace dmareg::testing

#endif  // DMAREG_TESTS_COMMON_SANITIZERS_H_
