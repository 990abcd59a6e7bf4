# Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#
# The libraries beside the core: one per backend (dmareg_verbs now; vfio,
# dmabuf, odp as they arrive) and the testing library. Each is a component of
# find_package(dmareg) and a pkg-config module of its own (dmareg-<name>.pc);
# cmake/DmaregInstall.cmake writes the package config that loads them.

find_package(PkgConfig QUIET)

# Where the CMake package goes, and the path from the .pc files' folder to
# the headers (the .pc files locate everything relative to themselves, so an
# installed tree can be moved).
set(DMAREG_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/dmareg)
file(RELATIVE_PATH DMAREG_PC_INCLUDE_REL
  ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_FULL_INCLUDEDIR})

# dmareg_component(<name> TARGET <target> DESCRIPTION <text> [STANDALONE]
#                  [COMPONENTS <components it needs>]
#                  [PKG_PREFIX <prefix> PKG_MODULES <modules...> [PKG_PUBLIC]])
#
# Installs <target> with its HEADERS file set, in an export set of its own,
# and writes what consumers load for it:
#   dmareg-<name>.cmake  for find_package(dmareg COMPONENTS <name>): its
#                        pkg-config dependencies, then its targets;
#   dmareg-<name>.pc     Requires: dmareg, the components it needs, and the
#                        modules its headers need (PKG_PUBLIC); else the
#                        modules go to Requires.private.
# A STANDALONE component (hooks: C, libc only) needs no core: its .pc
# requires nothing, and find_package(dmareg COMPONENTS <name>) alone loads
# neither the core nor Abseil.
# Consumers look a pkg-config module up again only where the exported target
# names it: always when PKG_PUBLIC, and for static libraries, which carry
# their private links with them; a shared library's private links do not.
function(dmareg_component name)
  cmake_parse_arguments(C "PKG_PUBLIC;STANDALONE" "TARGET;DESCRIPTION;PKG_PREFIX"
    "COMPONENTS;PKG_MODULES" ${ARGN})
  foreach(need IN LISTS C_COMPONENTS)
    get_property(built GLOBAL PROPERTY DMAREG_BUILT_COMPONENTS)
    if(NOT need IN_LIST built)
      message(FATAL_ERROR "dmareg component '${name}' needs component '${need}', not built")
    endif()
  endforeach()

  install(TARGETS ${C_TARGET} EXPORT dmareg-${name}-targets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
    FILE_SET HEADERS DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(EXPORT dmareg-${name}-targets NAMESPACE dmareg::
    DESTINATION ${DMAREG_CMAKE_INSTALL_DIR})

  # The components it needs, with theirs first: the package config loads
  # them in this order (a targets file refers to those loaded before it).
  set(needs "")
  foreach(need IN LISTS C_COMPONENTS)
    get_property(their GLOBAL PROPERTY DMAREG_COMPONENT_NEEDS_${need})
    foreach(n IN LISTS their ITEMS ${need})
      if(NOT n IN_LIST needs)
        list(APPEND needs ${n})
      endif()
    endforeach()
  endforeach()
  set_property(GLOBAL PROPERTY DMAREG_COMPONENT_NEEDS_${name} "${needs}")
  set_property(GLOBAL APPEND PROPERTY DMAREG_BUILT_COMPONENTS ${name})
  if(C_STANDALONE)
    set_property(GLOBAL APPEND PROPERTY DMAREG_STANDALONE_COMPONENTS ${name})
  endif()

  # dmareg-<name>.cmake
  set(find_deps "")
  if(C_PKG_MODULES AND (C_PKG_PUBLIC OR NOT BUILD_SHARED_LIBS))
    list(JOIN C_PKG_MODULES " " modules)
    string(APPEND find_deps
      "# dmareg::${name} links pkg-config's ${modules}: look it up as dmareg's build did.\n"
      "if(NOT TARGET PkgConfig::${C_PKG_PREFIX})\n"
      "  find_package(PkgConfig QUIET)\n"
      "  if(PKG_CONFIG_FOUND)\n"
      "    pkg_check_modules(${C_PKG_PREFIX} QUIET IMPORTED_TARGET ${modules})\n"
      "  endif()\n"
      "  if(NOT TARGET PkgConfig::${C_PKG_PREFIX})\n"
      "    set(_dmareg_component_error\n"
      "      \"component ${name} needs ${modules}, which pkg-config did not find\")\n"
      "    return()\n"
      "  endif()\n"
      "endif()\n")
  endif()
  file(CONFIGURE OUTPUT ${PROJECT_BINARY_DIR}/dmareg-${name}.cmake @ONLY CONTENT
"# dmareg component ${name}: ${C_DESCRIPTION}.
# Loaded by dmaregConfig.cmake after the core and the components it needs.
${find_deps}include(\"\${CMAKE_CURRENT_LIST_DIR}/dmareg-${name}-targets.cmake\")
")
  install(FILES ${PROJECT_BINARY_DIR}/dmareg-${name}.cmake
    DESTINATION ${DMAREG_CMAKE_INSTALL_DIR})

  # dmareg-<name>.pc
  set(pc_name dmareg-${name})
  if(C_STANDALONE)
    set(pc_description "dmareg: ${C_DESCRIPTION}")
    set(pc_requires "")
  else()
    # (pkg-config has no language: the C++20 flag is the consumer's.)
    set(pc_description "dmareg: ${C_DESCRIPTION}. C++ headers: compile with -std=c++20")
    set(pc_requires "dmareg = ${PROJECT_VERSION}")
  endif()
  foreach(need IN LISTS C_COMPONENTS)
    string(APPEND pc_requires " dmareg-${need} = ${PROJECT_VERSION}")
  endforeach()
  set(pc_requires_private "")
  list(JOIN C_PKG_MODULES " " modules)
  if(C_PKG_PUBLIC)
    string(APPEND pc_requires " ${modules}")
  else()
    set(pc_requires_private "${modules}")
  endif()
  get_target_property(pc_lib ${C_TARGET} OUTPUT_NAME)
  if(NOT pc_lib)
    set(pc_lib ${C_TARGET})
  endif()
  configure_file(${PROJECT_SOURCE_DIR}/cmake/dmareg-component.pc.in
    ${PROJECT_BINARY_DIR}/${pc_name}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${pc_name}.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()

# dmareg_add_backend(<name> DESCRIPTION <text> SOURCES <files...>
#                    HEADERS <public headers, relative to include/>
#                    [PKG_PREFIX <prefix> PKG_MODULES <modules...>
#                     DEBIAN_PACKAGES <packages...>]
#                    [BACKENDS <backends it builds on>] [PRIVATE_LIBS <libs...>])
#
# Declares option DMAREG_WITH_<NAME> (ON). When ON: finds the pkg-config
# modules (as the GLOBAL target PkgConfig::<prefix>, for the backend's tests
# and tools too) and stops with a message naming the missing package and the
# option that turns the backend off; then builds dmareg_<name> (export name
# dmareg::<name>) on the core, with the dependencies linked privately, and
# makes it component <name> (dmareg_library: with dmareg_<name>_internal and
# the rest), with HEADERS (its folder include/dmareg/<name>/
# and its C header, if any) as its installed file set.
function(dmareg_add_backend name)
  cmake_parse_arguments(B "" "DESCRIPTION;PKG_PREFIX"
    "SOURCES;HEADERS;PKG_MODULES;DEBIAN_PACKAGES;BACKENDS;PRIVATE_LIBS" ${ARGN})
  string(TOUPPER ${name} NAME)
  set(opt DMAREG_WITH_${NAME})
  option(${opt} "Build dmareg_${name}: ${B_DESCRIPTION}" ON)
  set_property(GLOBAL APPEND PROPERTY DMAREG_KNOWN_COMPONENTS ${name})
  list(TRANSFORM B_HEADERS PREPEND ${PROJECT_SOURCE_DIR}/include/)
  if(NOT ${opt})
    message(STATUS "dmareg: ${name} backend off (${opt}=OFF)")
    return()
  endif()

  set(off "or configure with -D${opt}=OFF to build dmareg without the ${name} backend")
  foreach(backend IN LISTS B_BACKENDS)
    if(NOT TARGET dmareg_${backend})
      string(TOUPPER ${backend} BACKEND)
      message(FATAL_ERROR "dmareg: the ${name} backend builds on the ${backend} backend, "
        "which is off: configure with -DDMAREG_WITH_${BACKEND}=ON, ${off}.")
    endif()
  endforeach()
  if(B_PKG_MODULES)
    list(JOIN B_PKG_MODULES " " modules)
    list(JOIN B_DEBIAN_PACKAGES " " debian)
    if(NOT PKG_CONFIG_FOUND)
      message(FATAL_ERROR "dmareg: the ${name} backend (${opt}=ON) needs pkg-config to "
        "find ${modules}. Install pkg-config (Debian: pkg-config), ${off}.")
    endif()
    pkg_check_modules(${B_PKG_PREFIX} QUIET IMPORTED_TARGET GLOBAL ${B_PKG_MODULES})
    if(NOT ${B_PKG_PREFIX}_FOUND)
      message(FATAL_ERROR "dmareg: the ${name} backend (${opt}=ON) needs ${modules}, "
        "which pkg-config did not find. Install it (Debian: apt-get install ${debian}), "
        "${off}.")
    endif()
    message(STATUS "dmareg: ${name} backend on (${modules} ${${B_PKG_PREFIX}_VERSION})")
  else()
    message(STATUS "dmareg: ${name} backend on")
  endif()

  set(target dmareg_${name})
  list(TRANSFORM B_BACKENDS PREPEND dmareg_ OUTPUT_VARIABLE backend_targets)
  set(pkg "")
  if(B_PKG_MODULES)
    set(pkg PkgConfig::${B_PKG_PREFIX})
  endif()
  dmareg_library(${target} SOURCES ${B_SOURCES}
    COMPONENTS dmareg ${backend_targets}
    PRIVATE ${B_PRIVATE_LIBS} ${pkg})
  add_library(dmareg::${name} ALIAS ${target})
  target_sources(${target} PUBLIC FILE_SET HEADERS
    BASE_DIRS ${PROJECT_SOURCE_DIR}/include
    FILES ${B_HEADERS})
  set_target_properties(${target} PROPERTIES OUTPUT_NAME ${target} EXPORT_NAME ${name})
  dmareg_component(${name} TARGET ${target} DESCRIPTION "${B_DESCRIPTION}"
    COMPONENTS ${B_BACKENDS}
    PKG_PREFIX ${B_PKG_PREFIX} PKG_MODULES ${B_PKG_MODULES})
endfunction()
