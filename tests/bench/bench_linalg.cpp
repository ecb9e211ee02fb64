// Micro-benchmarks of the linalg adapter: a large single-thread sgemm (the hardware reference the
// expert layers are compared with in scripts/bench-peer), expert-FFN-shaped GEMMs, and attention's
// small batched products on the adapter's own small-GEMM kernel next to one cblas call each.
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>
#include <vector>

#include "daa/kernels/linalg.hpp"

namespace {

using daa::kernels::Trans;

void run_gemm(benchmark::State& state, std::size_t m, std::size_t n, std::size_t k) {
  daa::kernels::set_blas_threads(1);
  std::vector<float> a(m * k, 0.5f), b(k * n, 0.25f), c(m * n, 0.0f);
  for (auto _ : state) {
    daa::kernels::gemm(Trans::no, Trans::no, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f,
                       c.data(), n);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

// Large square sgemm: the practical FLOP ceiling of one core.
void BM_sgemm_peak(benchmark::State& state) {
  run_gemm(state, 2048, 2048, 2048);
}
BENCHMARK(BM_sgemm_peak)->Unit(benchmark::kMillisecond)->MinTime(1.0);

// Expert FFN first layer at the default sizes: tokens x d_model (128) times d_model x d_ff (256).
void BM_expert_w1(benchmark::State& state) {
  run_gemm(state, std::size_t(state.range(0)), 256, 128);
}
BENCHMARK(BM_expert_w1)->Arg(16)->Arg(64)->Arg(256)->Arg(1024)->Unit(benchmark::kMicrosecond);

// Attention's per-sequence products at the main job's sizes (head_dim 32, blocks of 64): batch 8
// sequences of 128 rows of a [tokens, 3 * d_model = 384] matrix, as causal_attention_* pass them.
//   nt  S = scale Q K^T      m 64, n 64, k 32, beta 0
//   nn  O += P V             m 64, n 32, k 64, beta 1
//   tn  dK += dS^T Q         m 64, n 32, k 64, beta 1
// BM_small_gemm is gemm_strided_batched (the small kernel at these sizes); BM_cblas_small is the
// same batch as one cblas call per product, the previous implementation.
struct SmallShape {
  Trans ta, tb;
  std::size_t m, n, k;
  float alpha, beta;
};

constexpr SmallShape kNt{Trans::no, Trans::yes, 64, 64, 32, 0.17677669f, 0.0f};
constexpr SmallShape kNn{Trans::no, Trans::no, 64, 32, 64, 1.0f, 1.0f};
constexpr SmallShape kTn{Trans::yes, Trans::no, 64, 32, 64, 1.0f, 1.0f};

template <bool Small>
void run_small(benchmark::State& state, SmallShape s) {
  daa::kernels::set_blas_threads(1);
  constexpr std::size_t batch = 8, seq_len = 128, ld = 384, ldc = 64;
  const std::size_t stride = seq_len * ld, stride_c = s.m * ldc;
  std::vector<float> a(batch * stride), b(batch * stride), c(batch * stride_c, 0.0f);
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = float(i % 7) * 0.125f - 0.375f;
    b[i] = float(i % 5) * 0.25f - 0.5f;
  }
  for (auto _ : state) {
    if constexpr (Small) {
      daa::kernels::gemm_strided_batched(s.ta, s.tb, s.m, s.n, s.k, s.alpha, a.data(), ld, stride,
                                         b.data(), ld, stride, s.beta, c.data(), ldc, stride_c,
                                         batch);
    } else {
      for (std::size_t i = 0; i < batch; ++i)
        daa::kernels::gemm(s.ta, s.tb, s.m, s.n, s.k, s.alpha, a.data() + i * stride, ld,
                           b.data() + i * stride, ld, s.beta, c.data() + i * stride_c, ldc);
    }
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(batch * s.m * s.n * s.k) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

void BM_small_gemm(benchmark::State& state, SmallShape s) {
  run_small<true>(state, s);
}
void BM_cblas_small(benchmark::State& state, SmallShape s) {
  run_small<false>(state, s);
}
BENCHMARK_CAPTURE(BM_small_gemm, nt_64x64x32, kNt)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_cblas_small, nt_64x64x32, kNt)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_small_gemm, nn_64x32x64, kNn)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_cblas_small, nn_64x32x64, kNn)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_small_gemm, tn_64x32x64, kTn)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_cblas_small, tn_64x32x64, kTn)->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  Kokkos::initialize(argc, argv);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  Kokkos::finalize();
  return 0;
}
