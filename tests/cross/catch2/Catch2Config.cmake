# Catch2 for a cross build (tests/cross/aarch64.sh): Debian's catch2 package
# ships the header-only v2 plus a main compiled for the build machine, so the
# headers are used as they are and the main is compiled here for the target.
if(NOT TARGET Catch2::Catch2)
  add_library(Catch2::Catch2 INTERFACE IMPORTED)
  file(CONFIGURE OUTPUT "${CMAKE_BINARY_DIR}/catch2_main/catch2_main.cpp"
       CONTENT "#define CATCH_CONFIG_MAIN\n#include <catch2/catch.hpp>\n")
  add_library(lowbit_catch2_main STATIC "${CMAKE_BINARY_DIR}/catch2_main/catch2_main.cpp")
  target_link_libraries(lowbit_catch2_main PUBLIC Catch2::Catch2)
  add_library(Catch2::Catch2WithMain ALIAS lowbit_catch2_main)
endif()
set(Catch2_FOUND TRUE)
