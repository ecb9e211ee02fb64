// cuda_compile_link (issue 13): runs without a GPU. Its target depends on every CUDA test and
// benchmark, so it passing means daa::cuda and all of them compiled and linked; it then checks
// the one-line error messages of the checking macros and that the cuBLAS, NCCL and CUDA runtime
// libraries loaded at run time are the versions whose headers we compiled against.
#include "daa/core/error.hpp"
#include "daa/cuda/check.hpp"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdio>
#include <string>

namespace {
int failed = 0;
void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  if (!ok) ++failed;
}
// The message DAA_*_CHECK throws for a call that returns `code` (a constant stands in for it).
template <class Check>
std::string thrown(Check check) {
  try {
    check();
  } catch (const daa::Error& e) {
    return e.what();
  }
  return "(nothing thrown)";
}
}  // namespace

int main() {
  const std::string exact =
      daa::cuda::detail::cuda_message(cudaErrorInvalidValue, "cudaMalloc(&p, n)", "x.cpp", 12);
  expect(exact ==
             "cuda: x.cpp:12: cudaMalloc(&p, n) failed: cudaErrorInvalidValue (invalid "
             "argument)",
         "cuda message: " + exact);

  const std::string cuda = thrown([] { DAA_CUDA_CHECK(cudaErrorMemoryAllocation); });
  expect(cuda.find("cuda: ") == 0 && cuda.find("test_cuda_link.cpp:") != std::string::npos &&
             cuda.find("cudaErrorMemoryAllocation failed: cudaErrorMemoryAllocation") !=
                 std::string::npos,
         "DAA_CUDA_CHECK throws: " + cuda);
  const std::string cublas = thrown([] { DAA_CUBLAS_CHECK(CUBLAS_STATUS_NOT_INITIALIZED); });
  expect(cublas.find("cublas: ") == 0 && cublas.find("test_cuda_link.cpp:") != std::string::npos &&
             cublas.find("failed: CUBLAS_STATUS_NOT_INITIALIZED (") != std::string::npos,
         "DAA_CUBLAS_CHECK throws: " + cublas);
  const std::string nccl = thrown([] { DAA_NCCL_CHECK(ncclInvalidArgument); });
  expect(nccl.find("nccl: ") == 0 && nccl.find("test_cuda_link.cpp:") != std::string::npos &&
             nccl.find("failed: invalid argument") != std::string::npos,
         "DAA_NCCL_CHECK throws: " + nccl);
  expect(nccl.find('\n') == std::string::npos && cuda.find('\n') == std::string::npos,
         "messages are one line");

  int nccl_version = 0;
  DAA_NCCL_CHECK(ncclGetVersion(&nccl_version));
  expect(nccl_version == NCCL_VERSION_CODE, "libnccl " + std::to_string(nccl_version) +
                                                " matches nccl.h " +
                                                std::to_string(NCCL_VERSION_CODE));
  int cublas_major = 0, cublas_minor = 0;
  DAA_CUBLAS_CHECK(cublasGetProperty(MAJOR_VERSION, &cublas_major));
  DAA_CUBLAS_CHECK(cublasGetProperty(MINOR_VERSION, &cublas_minor));
  expect(cublas_major == CUBLAS_VER_MAJOR && cublas_minor == CUBLAS_VER_MINOR,
         "libcublas " + std::to_string(cublas_major) + "." + std::to_string(cublas_minor) +
             " matches cublas_api.h");
  int runtime = 0;
  DAA_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  expect(runtime == CUDART_VERSION, "CUDA runtime " + std::to_string(runtime) +
                                        " matches cuda_runtime_api.h " +
                                        std::to_string(CUDART_VERSION));
  int devices = 0;
  const cudaError_t error = cudaGetDeviceCount(&devices);
  std::printf("devices: %d (cudaGetDeviceCount: %s); the GPU tests skip without one\n",
              error == cudaSuccess ? devices : 0, cudaGetErrorName(error));
  std::printf("%s\n", failed == 0 ? "all checks passed" : "some checks failed");
  return failed == 0 ? 0 : 1;
}
