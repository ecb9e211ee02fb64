// The conversion kernels of daa/cuda/convert.hpp: grid-stride loops, so any count runs with a
// bounded grid; the only nvcc-compiled source of the adapters (the rest is host code).
#include "daa/cuda/check.hpp"
#include "daa/cuda/convert.hpp"

#include <algorithm>

namespace daa::cuda {
namespace {

constexpr int threads_per_block = 256;

// Enough blocks to fill a large GPU several times over, never more than the count needs.
unsigned blocks_for(std::size_t count) {
  const std::size_t needed = (count + threads_per_block - 1) / threads_per_block;
  return static_cast<unsigned>(std::min<std::size_t>(needed, 65535));
}

__global__ void to_bf16_kernel(const float* src, __nv_bfloat16* dst, std::size_t count) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < count;
       i += std::size_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void to_fp32_kernel(const __nv_bfloat16* src, float* dst, std::size_t count) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < count;
       i += std::size_t(gridDim.x) * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

}  // namespace

void to_bf16(const float* src, __nv_bfloat16* dst, std::size_t count, cudaStream_t stream) {
  if (count == 0) return;
  to_bf16_kernel<<<blocks_for(count), threads_per_block, 0, stream>>>(src, dst, count);
  DAA_CUDA_CHECK(cudaGetLastError());
}

void to_fp32(const __nv_bfloat16* src, float* dst, std::size_t count, cudaStream_t stream) {
  if (count == 0) return;
  to_fp32_kernel<<<blocks_for(count), threads_per_block, 0, stream>>>(src, dst, count);
  DAA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace daa::cuda
