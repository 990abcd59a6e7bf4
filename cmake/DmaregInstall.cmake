# Install: library, public headers, CMake package (dmareg::dmareg), pkg-config.
include(CMakePackageConfigHelpers)

install(TARGETS dmareg EXPORT dmaregTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/dmareg DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT dmaregTargets NAMESPACE dmareg::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/dmareg)
configure_package_config_file(cmake/dmaregConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/dmaregConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/dmareg)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/dmaregConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/dmaregConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/dmaregConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/dmareg)
file(RELATIVE_PATH DMAREG_PC_INCLUDE_REL
  ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_FULL_INCLUDEDIR})
configure_file(cmake/dmareg.pc.in ${CMAKE_CURRENT_BINARY_DIR}/dmareg.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/dmareg.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
