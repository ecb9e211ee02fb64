// Micro-benchmarks of the linalg adapter: a large single-thread sgemm (the hardware reference the
// expert layers are compared with in scripts/bench-peer) and expert-FFN-shaped GEMMs.
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

}  // namespace

int main(int argc, char** argv) {
  Kokkos::initialize(argc, argv);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  Kokkos::finalize();
  return 0;
}
