// Checking macros for CUDA runtime, cuBLAS and NCCL calls (DESIGN.md §5): a failed call throws
// daa::Error with one line naming the file, line, MPI rank (where MPI runs), the call and the
// library's error string. The only door through which src/cuda reports a failed call.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>

namespace daa::cuda::detail {
// The one-line messages, separate from the throw so tests can check their form.
std::string cuda_message(cudaError_t error, const char* call, const char* file, int line);
std::string cublas_message(cublasStatus_t status, const char* call, const char* file, int line);
std::string nccl_message(ncclResult_t result, const char* call, const char* file, int line);
[[noreturn]] void fail_cuda(cudaError_t error, const char* call, const char* file, int line);
[[noreturn]] void fail_cublas(cublasStatus_t status, const char* call, const char* file, int line);
[[noreturn]] void fail_nccl(ncclResult_t result, const char* call, const char* file, int line);
}  // namespace daa::cuda::detail

#define DAA_CUDA_CHECK(call)                                                      \
  do {                                                                            \
    const cudaError_t daa_cuda_error_ = (call);                                   \
    if (daa_cuda_error_ != cudaSuccess)                                           \
      ::daa::cuda::detail::fail_cuda(daa_cuda_error_, #call, __FILE__, __LINE__); \
  } while (0)

#define DAA_CUBLAS_CHECK(call)                                                         \
  do {                                                                                 \
    const cublasStatus_t daa_cublas_status_ = (call);                                  \
    if (daa_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                   \
      ::daa::cuda::detail::fail_cublas(daa_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define DAA_NCCL_CHECK(call)                                                       \
  do {                                                                             \
    const ncclResult_t daa_nccl_result_ = (call);                                  \
    if (daa_nccl_result_ != ncclSuccess)                                           \
      ::daa::cuda::detail::fail_nccl(daa_nccl_result_, #call, __FILE__, __LINE__); \
  } while (0)
