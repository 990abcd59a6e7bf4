/* Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
 *
 * version.h: the version of dmareg these headers belong to, for C and C++.
 * The macros say which headers a program was compiled against; the
 * functions say which library it runs with, which may be another one (a
 * newer 0.x minor release installed since: docs/abi.md says what stays
 * compatible).
 *
 *   #include "dmareg/version.h"
 *   #if DMAREG_VERSION < 200   // older than 0.2.0
 *   ...
 *   #endif
 *   printf("built with dmareg %s, running %s\n", DMAREG_VERSION_STRING,
 *          dmareg_version());        // C++: dmareg::Version()
 *
 * This file is the version's one source: the build reads the numbers from
 * it (CMakeLists.txt) for the libraries, their SONAMEs and the packages.
 */
#ifndef DMAREG_VERSION_H_
#define DMAREG_VERSION_H_

#define DMAREG_VERSION_MAJOR 0
#define DMAREG_VERSION_MINOR 1
#define DMAREG_VERSION_PATCH 0

/* One number that grows with each release: MAJOR * 10000 + MINOR * 100 + PATCH. */
#define DMAREG_VERSION \
  (DMAREG_VERSION_MAJOR * 10000 + DMAREG_VERSION_MINOR * 100 + DMAREG_VERSION_PATCH)

#define DMAREG_VERSION_STR_(x) #x
#define DMAREG_VERSION_STR(x) DMAREG_VERSION_STR_(x)
/* "MAJOR.MINOR.PATCH", e.g. "0.1.0". */
#define DMAREG_VERSION_STRING              \
  DMAREG_VERSION_STR(DMAREG_VERSION_MAJOR) \
  "." DMAREG_VERSION_STR(DMAREG_VERSION_MINOR) "." DMAREG_VERSION_STR(DMAREG_VERSION_PATCH)

#ifdef __cplusplus
#include <string_view>

#pragma GCC visibility push(default)
namespace dmareg {
/* The version of the libdmareg this program runs with ("0.1.0"). */
std::string_view Version() noexcept;
}  // namespace dmareg
#pragma GCC visibility pop

extern "C" {
#endif

#pragma GCC visibility push(default)
/* The same, for C: a static string. Declared in dmareg/c/dmareg.h too. */
const char* dmareg_version(void);
#pragma GCC visibility pop

#ifdef __cplusplus
}  // extern "C"
#endif

#endif /* DMAREG_VERSION_H_ */
