# Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#
# The documents' code must compile: each ```c++ / ```cpp block (and ```c, as
# C) of README.md and docs/*.md is written out at configure time as a
# translation unit of its own and compiled in the OBJECT library
# dmareg_readme_blocks against the headers of this tree, so a document that
# does not compile fails the build, and with it scripts/test. A change to
# one re-runs the extraction (CMAKE_CONFIGURE_DEPENDS). A `#line` directive
# makes compiler errors point into the document. Blocks that include a
# backend's header are compiled only when that backend is built.

set(_readme_dir ${PROJECT_BINARY_DIR}/readme)
# CONFIGURE_DEPENDS: a document added to docs/ is found by the next build.
file(GLOB _docs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/*.md)
list(SORT _docs)
set(_documents ${PROJECT_SOURCE_DIR}/README.md ${_docs})
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_documents})

set(_sources "")
set(_skipped 0)
foreach(_readme ${_documents})
  file(READ ${_readme} _text)
  get_filename_component(_stem ${_readme} NAME_WE)
  set(_index 0)
  set(_pos 0)  # offset of the unread rest of the text
  string(LENGTH "${_text}" _len)
  while(_pos LESS _len)
    # The next fence that opens a line.
    string(SUBSTRING "${_text}" ${_pos} -1 _rest)
    string(FIND "\n${_rest}" "\n```" _open)
    if(_open EQUAL -1)
      break()
    endif()
    math(EXPR _pos "${_pos} + ${_open} + 3")
    string(SUBSTRING "${_text}" ${_pos} -1 _rest)
    string(FIND "${_rest}" "\n" _eol)
    if(_eol EQUAL -1)
      break()
    endif()
    string(SUBSTRING "${_rest}" 0 ${_eol} _lang)
    string(STRIP "${_lang}" _lang)
    math(EXPR _pos "${_pos} + ${_eol} + 1")  # the block's first line
    string(SUBSTRING "${_text}" 0 ${_pos} _before)
    string(SUBSTRING "${_text}" ${_pos} -1 _rest)
    string(FIND "\n${_rest}" "\n```" _close)
    if(_close EQUAL -1)
      message(FATAL_ERROR "${_readme}: a ``` block is not closed")
    endif()
    string(SUBSTRING "${_rest}" 0 ${_close} _body)
    math(EXPR _pos "${_pos} + ${_close} + 3")  # past the closing fence

    if(_lang MATCHES "^(c\\+\\+|cpp)$")
      set(_ext cc)
    elseif(_lang STREQUAL "c")
      set(_ext c)
    else()
      continue()
    endif()
    math(EXPR _index "${_index} + 1")
    if(_body MATCHES "#include [<\"](infiniband/|dmareg/verbs/|dmareg/c/verbs.h|dmareg/testing/.*(verbs|rxe))"
       AND NOT TARGET dmareg_verbs)
      math(EXPR _skipped "${_skipped} + 1")
      continue()
    endif()
    if(_body MATCHES "#include [<\"](dmareg/vfio/|dmareg/testing/.*vfio|dmareg/testing/edu)"
       AND NOT TARGET dmareg_vfio)
      math(EXPR _skipped "${_skipped} + 1")
      continue()
    endif()
    if(_body MATCHES "#include [<\"]dmareg/dmabuf/" AND NOT TARGET dmareg_dmabuf)
      math(EXPR _skipped "${_skipped} + 1")
      continue()
    endif()
    if(_body MATCHES "#include [<\"]dmareg/odp/" AND NOT TARGET dmareg_odp)
      math(EXPR _skipped "${_skipped} + 1")
      continue()
    endif()
    # The line of the document the block starts on.
    string(REGEX REPLACE "[^\n]" "" _newlines "${_before}")
    string(LENGTH "${_newlines}" _line)
    math(EXPR _line "${_line} + 1")
    set(_file ${_readme_dir}/${_stem}_block${_index}.${_ext})
    # Rewritten only when changed, so an unrelated edit recompiles nothing.
    file(WRITE ${_file}.new "#line ${_line} \"${_readme}\"\n${_body}")
    file(COPY_FILE ${_file}.new ${_file} ONLY_IF_DIFFERENT)
    file(REMOVE ${_file}.new)
    list(APPEND _sources ${_file})
  endwhile()
endforeach()

# Blocks that left the documents leave the build too.
file(GLOB _old ${_readme_dir}/*)
list(REMOVE_ITEM _old ${_sources})
if(_old)
  file(REMOVE ${_old})
endif()

if(_sources)
  add_library(dmareg_readme_blocks OBJECT ${_sources})
  # As a reader's program compiles: missing field initialisers of
  # designated initialisers warn there.
  target_link_libraries(dmareg_readme_blocks PRIVATE dmareg dmareg_testing
    dmareg_consumer_warnings)
  if(TARGET dmareg_verbs)
    target_link_libraries(dmareg_readme_blocks PRIVATE dmareg_verbs PkgConfig::DMAREG_IBVERBS)
  endif()
  foreach(backend vfio dmabuf odp)
    if(TARGET dmareg_${backend})
      target_link_libraries(dmareg_readme_blocks PRIVATE dmareg_${backend})
    endif()
  endforeach()
endif()
list(LENGTH _sources _count)
if(_skipped)
  set(_skipped ", ${_skipped} not (they need a backend that is off)")
else()
  set(_skipped "")
endif()
message(STATUS "README.md and docs/: ${_count} C/C++ code blocks compiled with the tests${_skipped}")
