# -DDAA_ENABLE_CUDA=ON: checks the GPU backend's three dependencies before anything else is
# searched for: a Kokkos built with CUDA, the CUDA toolkit with cuBLAS, and NCCL. Stops with one
# line naming each one missing; scripts/build-cuda builds a CUDA Kokkos and configures against it.
include_guard(GLOBAL)
if(NOT DAA_ENABLE_CUDA)
  return()
endif()

include(${CMAKE_CURRENT_LIST_DIR}/DaaKokkos.cmake)

set(_daa_cuda_missing)

# Kokkos' own kokkos_check (3.x and 4.x) where it exists, else the devices its config lists.
set(_daa_kokkos_has_cuda FALSE)
if(COMMAND kokkos_check)
  kokkos_check(DEVICES CUDA RETURN_VALUE _daa_kokkos_has_cuda)
elseif(Kokkos_ENABLE_CUDA)
  set(_daa_kokkos_has_cuda TRUE)
endif()
if(NOT _daa_kokkos_has_cuda)
  list(JOIN Kokkos_DEVICES ", " _daa_kokkos_devices)
  list(APPEND _daa_cuda_missing
       "a Kokkos built with CUDA (found Kokkos ${Kokkos_VERSION} at ${Kokkos_DIR} with devices ${_daa_kokkos_devices}: build one with scripts/build-cuda KOKKOS_SOURCE_DIR, or point Kokkos_ROOT at one)")
endif()

# cuBLAS for the GEMMs. /usr/local/cuda is where these machines and NVIDIA's images keep it.
if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
  set(CUDAToolkit_ROOT /usr/local/cuda)
endif()
find_package(CUDAToolkit QUIET)
if(NOT CUDAToolkit_FOUND OR NOT TARGET CUDA::cublas)
  list(APPEND _daa_cuda_missing
       "the CUDA toolkit with cuBLAS (CUDAToolkit_ROOT=${CUDAToolkit_ROOT}: no nvcc or libcublas)")
endif()

# NCCL for collectives on device buffers; its library sits in lib/ (not lib64/) on these machines.
find_path(DAA_NCCL_INCLUDE_DIR nccl.h HINTS ${NCCL_ROOT}/include ${CUDAToolkit_INCLUDE_DIRS}
          /usr/local/cuda/include)
find_library(DAA_NCCL_LIBRARY nccl HINTS ${NCCL_ROOT}/lib ${NCCL_ROOT}/lib64
             ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib /usr/local/cuda/lib64)
if(NOT DAA_NCCL_INCLUDE_DIR OR NOT DAA_NCCL_LIBRARY)
  list(APPEND _daa_cuda_missing
       "NCCL (nccl.h and libnccl under NCCL_ROOT or /usr/local/cuda/include and /usr/local/cuda/lib)")
endif()

if(_daa_cuda_missing)
  list(JOIN _daa_cuda_missing ", and " _daa_cuda_missing_text)
  # The leading space marks the text preformatted: CMake prints it as one line, unwrapped.
  message(FATAL_ERROR " daa-swarm: DAA_ENABLE_CUDA=ON needs ${_daa_cuda_missing_text}")
endif()
message(STATUS "daa-swarm: CUDA backend: Kokkos ${Kokkos_VERSION} with CUDA, CUDA ${CUDAToolkit_VERSION} (cuBLAS), NCCL ${DAA_NCCL_LIBRARY}")

# fmt under nvcc: its consteval format-string checks do not compile ("call to consteval function
# ... did not produce a valid constant expression"), and fmt turns FMT_CONSTEXPR off when it
# sees __NVCC__, which its C++20 constexpr functions then reject. Format strings are checked at
# run time in this build instead; the host build keeps the compile-time check.
add_compile_definitions(FMT_CONSTEVAL= FMT_USE_CONSTEXPR=1)
