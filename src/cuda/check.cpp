// The messages and throws behind DAA_CUDA_CHECK, DAA_CUBLAS_CHECK and DAA_NCCL_CHECK: one line,
// "cuda: FILE:LINE: rank R: CALL failed: NAME (description)", thrown as daa::Error.
#include "daa/cuda/check.hpp"

#include "daa/core/error.hpp"

#if DAA_CUDA_WITH_MPI
#include <mpi.h>
#endif

#include <string>

namespace daa::cuda::detail {
namespace {

// "rank R: " while MPI runs (the rank names the node to look at), "" otherwise.
std::string rank_prefix() {
#if DAA_CUDA_WITH_MPI
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return "rank " + std::to_string(rank) + ": ";
  }
#endif
  return "";
}

std::string message(const char* library, const char* call, const char* file, int line,
                    const std::string& what) {
  return std::string(library) + ": " + file + ":" + std::to_string(line) + ": " + rank_prefix() +
         call + " failed: " + what;
}

}  // namespace

std::string cuda_message(cudaError_t error, const char* call, const char* file, int line) {
  return message("cuda", call, file, line,
                 std::string(cudaGetErrorName(error)) + " (" + cudaGetErrorString(error) + ")");
}

std::string cublas_message(cublasStatus_t status, const char* call, const char* file, int line) {
  return message(
      "cublas", call, file, line,
      std::string(cublasGetStatusName(status)) + " (" + cublasGetStatusString(status) + ")");
}

std::string nccl_message(ncclResult_t result, const char* call, const char* file, int line) {
  // ncclGetLastError adds NCCL's own detail (which peer, which transport) where it has one.
  std::string what = std::string(ncclGetErrorString(result));
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && last[0] != '\0') what += " (" + std::string(last) + ")";
  return message("nccl", call, file, line, what);
}

void fail_cuda(cudaError_t error, const char* call, const char* file, int line) {
  throw daa::Error(cuda_message(error, call, file, line));
}

void fail_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  throw daa::Error(cublas_message(status, call, file, line));
}

void fail_nccl(ncclResult_t result, const char* call, const char* file, int line) {
  throw daa::Error(nccl_message(result, call, file, line));
}

}  // namespace daa::cuda::detail
