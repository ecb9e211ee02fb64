// fp32 <-> bf16 conversion of device buffers, asynchronous on a stream: mixed precision's copies
// of fp32 master weights and activations into the bf16 operands of cuBLAS (daa/cuda/gemm.hpp).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>

namespace daa::cuda {

// dst[i] = src[i] rounded to the nearest bfloat16, ties to even (NaN stays NaN, overflow gives
// Inf), the rounding of kernels' Precision::bf16 on the host.
void to_bf16(const float* src, __nv_bfloat16* dst, std::size_t count, cudaStream_t stream);
// dst[i] = src[i] exactly (every bfloat16 is a float).
void to_fp32(const __nv_bfloat16* src, float* dst, std::size_t count, cudaStream_t stream);

}  // namespace daa::cuda
