# Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
# Warnings every target of ours gets (not third-party code).
add_library(dmareg_warnings INTERFACE)
target_compile_options(dmareg_warnings INTERFACE -Wall -Wextra -Wno-missing-field-initializers
  $<$<BOOL:${DMAREG_WERROR}>:-Werror>
  $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local>
  $<$<CXX_COMPILER_ID:Clang>:-Wthread-safety -Wthread-safety-beta>)
# What a user's program compiles with, none of the exemptions above: for the
# code that stands for one (the examples, the documents' code blocks, the check that the
# installed headers compile cleanly).
add_library(dmareg_consumer_warnings INTERFACE)
target_compile_options(dmareg_consumer_warnings INTERFACE -Wall -Wextra
  $<$<BOOL:${DMAREG_WERROR}>:-Werror>)
