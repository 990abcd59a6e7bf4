# Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#
# Install: the core library and its headers, the CMake package (dmareg::dmareg
# plus the components that cmake/DmaregComponents.cmake installed) and
# dmareg.pc. Included last, once every component is known.
include(CMakePackageConfigHelpers)

install(TARGETS dmareg EXPORT dmareg-targets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  FILE_SET HEADERS DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT dmareg-targets NAMESPACE dmareg:: DESTINATION ${DMAREG_CMAKE_INSTALL_DIR})

# What dmaregConfig.cmake needs to tell a component that was not built from
# one that does not exist, and to load each after those it needs.
get_property(DMAREG_BUILT_COMPONENTS GLOBAL PROPERTY DMAREG_BUILT_COMPONENTS)
get_property(DMAREG_KNOWN_COMPONENTS GLOBAL PROPERTY DMAREG_KNOWN_COMPONENTS)
get_property(DMAREG_STANDALONE_COMPONENTS GLOBAL PROPERTY DMAREG_STANDALONE_COMPONENTS)
list(APPEND DMAREG_KNOWN_COMPONENTS ${DMAREG_BUILT_COMPONENTS})
list(REMOVE_DUPLICATES DMAREG_KNOWN_COMPONENTS)
list(JOIN DMAREG_BUILT_COMPONENTS ", " DMAREG_BUILT_COMPONENTS_TEXT)
set(DMAREG_COMPONENT_NEEDS "")
foreach(c IN LISTS DMAREG_BUILT_COMPONENTS)
  get_property(needs GLOBAL PROPERTY DMAREG_COMPONENT_NEEDS_${c})
  if(needs)
    string(APPEND DMAREG_COMPONENT_NEEDS "set(_dmareg_needs_${c} \"${needs}\")\n")
  endif()
endforeach()

configure_package_config_file(cmake/dmaregConfig.cmake.in
  ${PROJECT_BINARY_DIR}/dmaregConfig.cmake
  INSTALL_DESTINATION ${DMAREG_CMAKE_INSTALL_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/dmaregConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/dmaregConfig.cmake
  ${PROJECT_BINARY_DIR}/dmaregConfigVersion.cmake
  DESTINATION ${DMAREG_CMAKE_INSTALL_DIR})

set(DMAREG_PC_HOOKS_LIBS "")
if(TARGET dmareg_hooks)
  set(DMAREG_PC_HOOKS_LIBS "-Wl,--push-state,--no-as-needed -ldmareg_hooks -Wl,--pop-state")
endif()
configure_file(cmake/dmareg.pc.in ${PROJECT_BINARY_DIR}/dmareg.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/dmareg.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
