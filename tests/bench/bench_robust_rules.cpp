// The robust rules' device kernels (daa/robust/device_rules.hpp) next to the host engine they
// match bit for bit, on the same n = 8 rows of d = 2^20 floats (a gradient round's shape):
//   BM_<rule>_kernel  the Kokkos kernel on kernels::ExecSpace (here the host backend)
//   BM_<rule>_host    the dispatch's host path (the round engine's own loops, in place)
// rule: median, trimmed_mean (f = 2, with the per-row counts), gram (the 8 x 8 Gram matrix).
// Round-robin rounds: compare medians. Run: build/tests/bench/bench_robust_rules.
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>
#include <cstdint>
#include <string>
#include <tuple>

#include "bench_common.hpp"
#include "daa/core/rng.hpp"
#include "daa/kernels/kokkos_compat.hpp"
#include "daa/robust/device_rules.hpp"

namespace {

namespace device = daa::robust::device;
using daa::robust::Rule;

struct Inputs {
  int n = 8;
  std::size_t d = 0;
  daa::kernels::Matrix<float> rows;
  daa::kernels::Vector<float> out;
  daa::kernels::Vector<std::int64_t> counts;
  daa::kernels::Matrix<double> gram;

  explicit Inputs(std::size_t d_)
      : d(d_), rows("rows", n, d_), out("out", d_), counts("counts", n), gram("gram", n, n) {
    auto h = Kokkos::create_mirror_view(rows);
    for (int i = 0; i < n; ++i)
      for (std::size_t j = 0; j < d; ++j)
        h(i, j) = float(daa::core::counter_uniform(3, daa::core::RngPurpose::test,
                                                   std::uint64_t(i) * d + j, 0) -
                        0.5);
    Kokkos::deep_copy(rows, h);
  }
};

void bytes_processed(benchmark::State& state, const Inputs* in) {
  state.SetBytesProcessed(std::int64_t(state.iterations()) * in->n * std::int64_t(in->d) * 4);
}

void BM_coordinate_kernel(benchmark::State& state, const Inputs* in, Rule rule, int f) {
  for (auto _ : state) {
    device::coordinate_rule(daa::kernels::ExecSpace(), rule, f, in->rows, in->out, in->counts);
    Kokkos::fence();
  }
  bytes_processed(state, in);
}

void BM_coordinate_host(benchmark::State& state, const Inputs* in, Rule rule, int f) {
  for (auto _ : state) device::coordinate_rule(rule, f, in->rows, in->out, in->counts);
  bytes_processed(state, in);
}

void BM_gram_kernel(benchmark::State& state, const Inputs* in) {
  for (auto _ : state) {
    device::gram_matrix(daa::kernels::ExecSpace(), in->rows, in->gram);
    Kokkos::fence();
  }
  bytes_processed(state, in);
}

void BM_gram_host(benchmark::State& state, const Inputs* in) {
  for (auto _ : state) device::gram_matrix(in->rows, in->gram);
  bytes_processed(state, in);
}

}  // namespace

int main(int argc, char** argv) {
  // --quick (the ctest smoke run): one round of 2^12 coordinates at the shortest time.
  const bool quick = daa::bench::take_quick_flag(argc, argv);
  const int rounds = quick ? 1 : 3;
  const double min_time = quick ? 0.01 : 0.5;
  daa::kernels::initialize_kokkos();
  {
    const Inputs in(quick ? std::size_t(1) << 12 : std::size_t(1) << 20);
    for (int rep = 0; rep < rounds; ++rep) {
      for (const auto& [name, rule, f] : {std::tuple{"median", Rule::median, 0},
                                          std::tuple{"trimmed_mean", Rule::trimmed_mean, 2}}) {
        benchmark::RegisterBenchmark((std::string("BM_") + name + "_kernel").c_str(),
                                     BM_coordinate_kernel, &in, rule, f)
            ->Unit(benchmark::kMillisecond)
            ->MinTime(min_time);
        benchmark::RegisterBenchmark((std::string("BM_") + name + "_host").c_str(),
                                     BM_coordinate_host, &in, rule, f)
            ->Unit(benchmark::kMillisecond)
            ->MinTime(min_time);
      }
      benchmark::RegisterBenchmark("BM_gram_kernel", BM_gram_kernel, &in)
          ->Unit(benchmark::kMillisecond)
          ->MinTime(min_time);
      benchmark::RegisterBenchmark("BM_gram_host", BM_gram_host, &in)
          ->Unit(benchmark::kMillisecond)
          ->MinTime(min_time);
    }
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  }
  Kokkos::finalize();
  return 0;
}
