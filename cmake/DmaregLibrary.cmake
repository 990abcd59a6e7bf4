# Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#
# How each dmareg library is built: its sources compiled once, into two
# flavours of the library (docs/abi.md).
#
# dmareg_library(<target> [SOURCES <files...>]
#                [COMPONENTS <the dmareg libraries it builds on>]
#                [PUBLIC <other libraries its installed headers need>]
#                [PRIVATE <libraries its code needs>])
#
# makes
#   <target>_objects   OBJECT: the sources, compiled with hidden visibility
#                      (-fvisibility=hidden -fvisibility-inlines-hidden; the
#                      installed headers push default visibility around what
#                      they declare). More sources:
#                      target_sources(<target>_objects PRIVATE ...).
#   <target>           the installed library from those objects: shared
#                      (static with BUILD_SHARED_LIBS=OFF), SONAME .so.0,
#                      linked with abi/<target>.map, so it exports the public
#                      API its headers declare and nothing else. Programs,
#                      examples and tests of the public API link it.
#   <target>_internal  STATIC, never installed: the same objects with all
#                      their symbols, for tests of what only src/ declares.
#                      (An alias of <target> in a static build.)
#   <target>_api       INTERFACE: the headers and what they need, no code;
#                      for helper libraries that users of either flavour link.
# The caller adds the installed headers to <target> (FILE_SET HEADERS) and
# sets EXPORT_NAME; a COMPONENTS entry of <target> is the same flavour of it
# for each flavour (dmareg_verbs -> dmareg; dmareg_verbs_internal ->
# dmareg_internal).
#
# A program links one flavour of each library: two copies of the core in one
# process would be two caches' worth of process-wide state (the fork
# generation, thread slots, the log) that each believe to be the only one.
# dmareg_check_flavours() fails the configure step where one does not.
set(DMAREG_ABI_DIR ${PROJECT_SOURCE_DIR}/abi)

function(dmareg_library target)
  cmake_parse_arguments(L "" "" "SOURCES;COMPONENTS;PUBLIC;PRIVATE" ${ARGN})
  list(TRANSFORM L_COMPONENTS APPEND _api OUTPUT_VARIABLE api_components)
  list(TRANSFORM L_COMPONENTS APPEND _internal OUTPUT_VARIABLE internal_components)

  add_library(${target}_api INTERFACE)
  target_include_directories(${target}_api INTERFACE ${PROJECT_SOURCE_DIR}/include)
  target_compile_features(${target}_api INTERFACE cxx_std_20)
  target_link_libraries(${target}_api INTERFACE ${api_components} ${L_PUBLIC})

  add_library(${target}_objects OBJECT ${L_SOURCES})
  target_include_directories(${target}_objects PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(${target}_objects
    PUBLIC ${target}_api
    PRIVATE dmareg_warnings ${L_PRIVATE})
  set_target_properties(${target}_objects PROPERTIES
    C_VISIBILITY_PRESET hidden CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)

  add_library(${target} $<TARGET_OBJECTS:${target}_objects>)
  # What the headers need reaches consumers of the installed library too.
  target_compile_features(${target} PUBLIC cxx_std_20)
  target_link_libraries(${target} PUBLIC ${L_COMPONENTS} ${L_PUBLIC} PRIVATE ${L_PRIVATE})
  set_target_properties(${target} PROPERTIES LINKER_LANGUAGE CXX
    VERSION ${PROJECT_VERSION} SOVERSION 0
    # Its dmareg dependencies lie next to it, wherever the prefix is.
    INSTALL_RPATH "$ORIGIN")
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "SHARED_LIBRARY")
    set(map ${DMAREG_ABI_DIR}/${target}.map)
    target_link_options(${target} PRIVATE "LINKER:--version-script=${map}")
    # Every symbol it uses is defined by what it links (not so under the
    # sanitizers, whose run time only the program links).
    if(NOT DMAREG_SANITIZE)
      target_link_options(${target} PRIVATE "LINKER:--no-undefined")
    endif()
    set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS ${map})

    add_library(${target}_internal STATIC EXCLUDE_FROM_ALL $<TARGET_OBJECTS:${target}_objects>)
    target_include_directories(${target}_internal PUBLIC ${PROJECT_SOURCE_DIR}/src)
    target_link_libraries(${target}_internal
      PUBLIC ${target}_api ${internal_components}
      PRIVATE ${L_PRIVATE})
    set_target_properties(${target}_internal PROPERTIES LINKER_LANGUAGE CXX)
    set_property(GLOBAL APPEND PROPERTY DMAREG_SHARED_LIBRARIES ${target})
  else()
    add_library(${target}_internal ALIAS ${target})
  endif()
endfunction()

# The closure of what `target` links, in `out`: targets only, with the
# generator expressions the dmareg build uses taken apart.
function(_dmareg_link_closure target out)
  set(seen "")
  set(queue ${target})
  while(queue)
    list(POP_FRONT queue t)
    get_target_property(real ${t} ALIASED_TARGET)
    if(real)
      set(t ${real})
    endif()
    if(t IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${t})
    get_target_property(imported ${t} IMPORTED)
    if(imported)
      continue()
    endif()
    set(links "")
    foreach(prop LINK_LIBRARIES INTERFACE_LINK_LIBRARIES)
      get_target_property(l ${t} ${prop})
      if(l)
        list(APPEND links ${l})
      endif()
    endforeach()
    foreach(l IN LISTS links)
      string(REGEX REPLACE "^\\$<(BUILD_INTERFACE|LINK_ONLY):(.*)>$" "\\2" l "${l}")
      if(TARGET "${l}")
        list(APPEND queue "${l}")
      endif()
    endforeach()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

# Fails the configure step where a program of this build links both
# flavours of a dmareg library (see above), naming the program.
function(dmareg_check_flavours)
  get_property(libraries GLOBAL PROPERTY DMAREG_SHARED_LIBRARIES)
  set(dirs ${PROJECT_SOURCE_DIR})
  set(errors "")
  while(dirs)
    list(POP_FRONT dirs dir)
    get_property(sub DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
    list(APPEND dirs ${sub})
    get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
    foreach(t IN LISTS targets)
      get_target_property(type ${t} TYPE)
      if(NOT type MATCHES "^(EXECUTABLE|MODULE_LIBRARY)$")
        continue()
      endif()
      _dmareg_link_closure(${t} closure)
      foreach(lib IN LISTS libraries)
        if(lib IN_LIST closure AND ${lib}_internal IN_LIST closure)
          list(APPEND errors "${t} links both ${lib} and ${lib}_internal")
        endif()
      endforeach()
    endforeach()
  endwhile()
  if(errors)
    list(JOIN errors "\n  " text)
    message(FATAL_ERROR "dmareg: a program must link one flavour of each dmareg library "
      "(the shared one or the _internal one: cmake/DmaregLibrary.cmake):\n  ${text}")
  endif()
endfunction()
