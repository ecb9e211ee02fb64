# The CUDA adapters without Kokkos (issue 13): the static library daa::cuda (cuBLAS GEMMs, bf16
# conversion kernels, NCCL transport) for sm_90, built whenever nvcc is found, so the test command
# compiles and links them here and in CI; their tests (tests/cuda) skip where no GPU is present.
# Included by the top CMakeLists.txt and by tests/cuda/CMakeLists.txt's standalone project (what
# scripts/gpu-check builds on a GPU machine without the project's other dependencies).

include(CheckLanguage)
check_language(CUDA)
if(CMAKE_CUDA_COMPILER)
  set(DAA_CUDA_ADAPTERS_DEFAULT ON)
else()
  set(DAA_CUDA_ADAPTERS_DEFAULT OFF)
endif()
option(DAA_CUDA_ADAPTERS "Build the CUDA adapters (cuBLAS, NCCL) and their tests; default: ON where nvcc is found"
       ${DAA_CUDA_ADAPTERS_DEFAULT})
add_feature_info(CudaAdapters DAA_CUDA_ADAPTERS "cuBLAS/NCCL adapters (daa::cuda), compiled for sm_90")
if(NOT DAA_CUDA_ADAPTERS)
  return()
endif()
if(NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "daa-swarm: DAA_CUDA_ADAPTERS=ON but no CUDA compiler was found; put nvcc on PATH or set CUDACXX (e.g. /usr/local/cuda/bin/nvcc)")
endif()

# Hopper (H100/H200); CMake would silently default to sm_75 (DESIGN.md §10).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90)
endif()
# CMake 3.25 knows no CUDA20 flags for nvcc 13; the one .cu file needs only C++17.
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

# NCCL ships no CMake package; on these machines its library sits in the toolkit's lib/, not lib64/.
find_path(DAA_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda/include)
find_library(DAA_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_ROOT}/lib ${CUDAToolkit_LIBRARY_DIR}
             /usr/local/cuda/lib /usr/local/cuda/lib64)
if(NOT DAA_NCCL_INCLUDE_DIR OR NOT DAA_NCCL_LIBRARY)
  message(FATAL_ERROR "daa-swarm: DAA_CUDA_ADAPTERS=ON needs NCCL (nccl.h: ${DAA_NCCL_INCLUDE_DIR}, libnccl: ${DAA_NCCL_LIBRARY}); install it or pass -DDAA_CUDA_ADAPTERS=OFF")
endif()
message(STATUS "daa-swarm: CUDA adapters with nvcc ${CMAKE_CUDA_COMPILER_VERSION}, sm_${CMAKE_CUDA_ARCHITECTURES}, NCCL ${DAA_NCCL_LIBRARY}")

# Our warning flags for host code, and nvcc's equivalent for the one .cu file.
add_library(daa_cuda_warnings INTERFACE)
target_compile_options(daa_cuda_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Werror>
  $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror>)

get_filename_component(DAA_CUDA_ROOT ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)
add_library(daa_cuda STATIC ${DAA_CUDA_ROOT}/src/cuda/check.cpp ${DAA_CUDA_ROOT}/src/cuda/gemm.cpp
                            ${DAA_CUDA_ROOT}/src/cuda/convert.cu
                            ${DAA_CUDA_ROOT}/src/cuda/nccl_transport.cpp)
add_library(daa::cuda ALIAS daa_cuda)
target_include_directories(daa_cuda PUBLIC ${DAA_CUDA_ROOT}/include)
target_include_directories(daa_cuda SYSTEM PUBLIC ${DAA_NCCL_INCLUDE_DIR})
target_link_libraries(daa_cuda PUBLIC CUDA::cublas CUDA::cudart ${DAA_NCCL_LIBRARY}
                               PRIVATE daa_cuda_warnings)
target_compile_features(daa_cuda PUBLIC cxx_std_20)
# MPI is the control plane (the NCCL id broadcast); without it (a bare GPU machine) the adapters
# build for one process and NcclComm(MPI_Comm) is absent.
if(TARGET MPI::MPI_CXX)
  target_link_libraries(daa_cuda PUBLIC MPI::MPI_CXX)
  target_compile_definitions(daa_cuda PUBLIC DAA_CUDA_WITH_MPI=1)
else()
  target_compile_definitions(daa_cuda PUBLIC DAA_CUDA_WITH_MPI=0)
endif()
