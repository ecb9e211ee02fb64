# Finds every external dependency once and exposes it as an imported target.
# Kokkos: cmake/DaaKokkos.cmake (DESIGN.md §10); HDF5 must be the parallel build.

find_package(MPI REQUIRED COMPONENTS CXX)
set_package_properties(MPI PROPERTIES TYPE REQUIRED PURPOSE "ranks, collectives (Open MPI)")

set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "daa-swarm: found a serial HDF5 (${HDF5_C_INCLUDE_DIRS}); install libhdf5-openmpi-dev")
endif()
set_package_properties(HDF5 PROPERTIES TYPE REQUIRED PURPOSE "parallel checkpoints")

# Kokkos (Debian 3.4 or a 4.x install) and its Debian include-path repair.
include(DaaKokkos)

set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(DAA_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas-pthread openblas
          PATHS /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu REQUIRED)
add_library(daa_blas INTERFACE)
target_link_libraries(daa_blas INTERFACE BLAS::BLAS)
target_include_directories(daa_blas SYSTEM INTERFACE ${DAA_CBLAS_INCLUDE_DIR})
set_package_properties(BLAS PROPERTIES TYPE REQUIRED PURPOSE "host GEMM (OpenBLAS)")

find_package(Boost REQUIRED COMPONENTS serialization)
set_package_properties(Boost PROPERTIES TYPE REQUIRED PURPOSE "serialized control messages (include/daa/parallel/exchange.hpp)")

find_package(tomlplusplus REQUIRED)
find_package(CLI11 REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(ZLIB REQUIRED)
# The watchdog's thread (core/watchdog.cpp).
find_package(Threads REQUIRED)
set_package_properties(tomlplusplus PROPERTIES TYPE REQUIRED PURPOSE "input files")
set_package_properties(CLI11 PROPERTIES TYPE REQUIRED PURPOSE "command line")
set_package_properties(fmt PROPERTIES TYPE REQUIRED PURPOSE "formatted output")
set_package_properties(nlohmann_json PROPERTIES TYPE REQUIRED
                       PURPOSE "JSON documents (status, summary, traces, replay)")
set_package_properties(ZLIB PROPERTIES TYPE REQUIRED PURPOSE "gzipped IDX data")

# SentencePiece trains and runs the BPE tokenizer of `daa-swarm prepare` (src/io/tokenizer.cpp).
find_package(PkgConfig REQUIRED)
pkg_check_modules(SentencePiece IMPORTED_TARGET sentencepiece)
if(NOT SentencePiece_FOUND)
  message(FATAL_ERROR "daa-swarm: SentencePiece not found by pkg-config (sentencepiece.pc); install libsentencepiece-dev")
endif()

if(DAA_BUILD_TESTS)
  find_package(GTest REQUIRED)
  set_package_properties(GTest PROPERTIES TYPE REQUIRED PURPOSE "unit and MPI tests")
endif()
if(DAA_BUILD_BENCHMARKS)
  find_package(benchmark REQUIRED)
  set_package_properties(benchmark PROPERTIES TYPE REQUIRED PURPOSE "micro-benchmarks")
endif()
