// The oneDNN peer of bench_linalg's bf16 products, declared apart from oneDNN's headers: nvcc's
// front end crashes on dnnl.hpp (an internal error at std::construct_at), and in the CUDA build
// nvcc compiles bench_linalg.cpp, so onednn_peer.cpp is built by the host compiler alone.
#pragma once

#include <benchmark/benchmark.h>

#include <cstddef>

namespace daa::bench {

// C [m x n] = op(A) op(B) + beta C, operands row-major and dense, as bench_linalg's PlainShape.
struct PeerShape {
  bool trans_a, trans_b;
  std::size_t m, n, k;
  float beta;
};

// oneDNN's bf16 matmul on one thread: with `convert`, each iteration first converts the fp32
// operands to bf16 (two reorders), as a training product with fp32 operands must; without, the
// matmul alone. Skips with the reason where oneDNN is absent or OMP_NUM_THREADS is not 1.
void run_onednn_bf16(benchmark::State& state, const PeerShape& s, bool convert);

}  // namespace daa::bench
