# Finds Kokkos once, whichever the build points at: Debian's 3.4 (Serial) or a 4.x install named by
# Kokkos_ROOT (scripts/build-cuda builds one with CUDA). Included by DaaDependencies and DaaCuda.
include_guard(GLOBAL)

find_package(Kokkos REQUIRED)
# Debian's (Trilinos') KokkosConfig points the imported target at /usr/lib/include, which holds no
# Kokkos headers; use the real header path there, as a SYSTEM include so Kokkos' own warnings do
# not trip -Werror. A Kokkos 4.x install's target is right as it is (imported, hence SYSTEM).
get_target_property(_daa_kokkos_includes Kokkos::kokkos INTERFACE_INCLUDE_DIRECTORIES)
set(_daa_kokkos_header_found FALSE)
foreach(_dir IN LISTS _daa_kokkos_includes)
  if(EXISTS "${_dir}/Kokkos_Core.hpp")
    set(_daa_kokkos_header_found TRUE)
  endif()
endforeach()
# (4.x's Kokkos::kokkos names no directory itself: it links Kokkos::kokkoscore, which does.)
if(_daa_kokkos_includes AND NOT _daa_kokkos_header_found)
  if(NOT Kokkos_INCLUDE_DIRS OR NOT EXISTS "${Kokkos_INCLUDE_DIRS}/Kokkos_Core.hpp")
    message(FATAL_ERROR " daa-swarm: the Kokkos at ${Kokkos_DIR} names no directory holding Kokkos_Core.hpp")
  endif()
  set_target_properties(Kokkos::kokkos PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "")
  target_include_directories(Kokkos::kokkos SYSTEM INTERFACE ${Kokkos_INCLUDE_DIRS})
endif()
message(STATUS "daa-swarm: Kokkos ${Kokkos_VERSION} (${Kokkos_DIR}), devices: ${Kokkos_DEVICES}")
set_package_properties(Kokkos PROPERTIES TYPE REQUIRED PURPOSE "performance-portable kernels")
