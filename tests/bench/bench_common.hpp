// What the single-process benchmarks share: the practical FLOP ceiling of one core (a 2048^3
// single-thread sgemm through the linalg adapter, measured in the same run as the kernels reported
// as a fraction of it) and the --quick flag of their ctest smoke runs.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <string_view>
#include <vector>

#include "daa/kernels/linalg.hpp"

namespace daa::bench {

inline void BM_sgemm_peak(benchmark::State& state) {
  const std::size_t n = 2048;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n, 0.0f);
  for (auto _ : state) {
    kernels::gemm(kernels::Trans::no, kernels::Trans::no, n, n, n, 1.0f, a.data(), n, b.data(), n,
                  0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(n * n) * double(n) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

// Removes --quick from the arguments (before Google Benchmark parses them); true if it was there.
inline bool take_quick_flag(int& argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--quick") {
      std::copy(argv + i + 1, argv + argc, argv + i);
      --argc;
      return true;
    }
  return false;
}

}  // namespace daa::bench
