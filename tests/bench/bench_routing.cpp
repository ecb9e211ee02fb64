// The MoE layer's routing bookkeeping (RoutingBookkeeping::run) at the main job's sizes (n = 4096
// tokens, top-2 of 8 experts, capacity factor 1.25), next to the serial host counting sort the
// layer ran before it, on the same inputs in the same run (round-robin rounds: compare medians):
//   BM_routing_kernels  RoutingBookkeeping::run, its figures' transfer included
//   BM_routing_host     the old host loop: ranks, sums, slot_pos/token_of and their copies
// Run: build/tests/bench/bench_routing (OMP_NUM_THREADS=1 for the one-thread comparison).
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>
#include <cstdint>
#include <vector>

#include "bench_common.hpp"
#include "daa/core/rng.hpp"
#include "daa/model/routing_bookkeeping.hpp"

namespace {

using daa::kernels::Matrix;
using daa::model::RoutingBookkeeping;

constexpr std::size_t kTokens = 4096, kTopK = 2, kExperts = 8;

struct Inputs {
  RoutingBookkeeping::IntMatrix choice{"choice", kTokens, kTopK};
  Matrix<float> gate{"gate", kTokens, kTopK}, probs{"probs", kTokens, kExperts};
  std::size_t capacity = daa::model::expert_capacity(true, 1.25, kTokens, kTopK, kExperts);

  Inputs() {
    // Two distinct experts per token, uniform, the same on every run.
    auto c = Kokkos::create_mirror_view(choice);
    auto g = Kokkos::create_mirror_view(gate);
    auto p = Kokkos::create_mirror_view(probs);
    for (std::size_t t = 0; t < kTokens; ++t) {
      const auto u = [&](std::size_t i) {
        return daa::core::counter_uniform(7, daa::core::RngPurpose::test, t, i);
      };
      const int a = int(u(0) * double(kExperts)) % int(kExperts);
      const int b = (a + 1 + int(u(1) * double(kExperts - 1)) % int(kExperts - 1)) % int(kExperts);
      c(t, 0) = a;
      c(t, 1) = b;
      g(t, 0) = float(u(2));
      g(t, 1) = float(u(3));
      for (std::size_t e = 0; e < kExperts; ++e) p(t, e) = float(u(4 + e));
    }
    Kokkos::deep_copy(choice, c);
    Kokkos::deep_copy(gate, g);
    Kokkos::deep_copy(probs, p);
  }
};

void BM_routing_kernels(benchmark::State& state, const Inputs* in) {
  RoutingBookkeeping book;
  RoutingBookkeeping::IntMatrix slot_pos("slot_pos", 0, 0);
  RoutingBookkeeping::IntVector token_of("token_of", 0);
  for (auto _ : state) {
    const auto counts = book.run(in->choice, in->gate, in->probs, in->capacity, slot_pos, token_of);
    benchmark::DoNotOptimize(counts.gate_sum.data());
  }
}

// The layer's host counting sort before the kernels (commit ee07054 replaced it).
void BM_routing_host(benchmark::State& state, const Inputs* in) {
  const std::size_t n = kTokens, k = kTopK, E = kExperts, cap = in->capacity;
  RoutingBookkeeping::IntMatrix slot_pos("slot_pos", n, k);
  RoutingBookkeeping::IntVector token_of("token_of", 0);
  for (auto _ : state) {
    auto choice = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), in->choice);
    auto probs = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), in->probs);
    auto gate = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), in->gate);
    std::vector<std::size_t> kept(E, 0), offset(E + 1, 0);
    std::vector<int> rank(n * k, -1);
    std::vector<double> routed(E, 0.0), prob_sum(E, 0.0), gate_sum(E, 0.0);
    for (std::size_t s = 0; s < k; ++s)
      for (std::size_t t = 0; t < n; ++t) {
        const int e = choice(t, s);
        routed[std::size_t(e)] += 1;
        if (kept[std::size_t(e)] < cap) rank[t * k + s] = int(kept[std::size_t(e)]++);
      }
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t e = 0; e < E; ++e) prob_sum[e] += double(probs(t, e));
    for (std::size_t e = 0; e < E; ++e) offset[e + 1] = offset[e] + kept[e];
    daa::kernels::ensure_extent(token_of, offset[E]);
    auto pos_h = Kokkos::create_mirror_view(slot_pos);
    auto token_h = Kokkos::create_mirror_view(token_of);
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t s = 0; s < k; ++s) {
        const int r = rank[t * k + s];
        const int e = choice(t, s);
        if (r < 0) {
          pos_h(t, s) = -1;
          continue;
        }
        const std::size_t pos = offset[std::size_t(e)] + std::size_t(r);
        pos_h(t, s) = int(pos);
        token_h(pos) = int(t);
        gate_sum[std::size_t(e)] += double(gate(t, s));
      }
    Kokkos::deep_copy(slot_pos, pos_h);
    Kokkos::deep_copy(token_of, token_h);
    benchmark::DoNotOptimize(gate_sum.data());
    benchmark::DoNotOptimize(prob_sum.data());
    benchmark::DoNotOptimize(routed.data());
  }
}

}  // namespace

int main(int argc, char** argv) {
  // --quick (the ctest smoke run): one round at the shortest time, only to show that it runs.
  const bool quick = daa::bench::take_quick_flag(argc, argv);
  const int rounds = quick ? 1 : 5;
  const double min_time = quick ? 0.01 : 0.3;
  Kokkos::initialize(argc, argv);
  {
    const Inputs inputs;
    // Round-robin repeats (not Google Benchmark's back-to-back repetitions): compare medians.
    for (int rep = 0; rep < rounds; ++rep) {
      benchmark::RegisterBenchmark("BM_routing_kernels", BM_routing_kernels, &inputs)
          ->Unit(benchmark::kMicrosecond)
          ->MinTime(min_time);
      benchmark::RegisterBenchmark("BM_routing_host", BM_routing_host, &inputs)
          ->Unit(benchmark::kMicrosecond)
          ->MinTime(min_time);
    }
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  }
  Kokkos::finalize();
  return 0;
}
