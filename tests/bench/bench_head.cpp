// The language model's output head fused with the softmax cross-entropy, at the main job's sizes
// (inputs/text-mixture.toml on one rank: 4096 rows of d_model 128, a tied vocabulary of 4096),
// forward + backward, next to a large single-thread sgemm measured in the same run:
//   BM_sgemm_peak   2048^3 sgemm: the practical FLOP ceiling of one core
//   BM_head/R       the model's last stage holding only the final norm and the tied head, with the
//                   head and loss in chunks of R rows; R = 4096 is one chunk, the [rows, vocab]
//                   logits buffer the model used before the fused head (64 MB)
// GFLOPS counts the three vocabulary products (2 n d vocab each). Run: build/tests/bench/bench_head
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "bench_common.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/model/language_model.hpp"

namespace {

using daa::kernels::Matrix;
using daa::kernels::Trans;
using daa::model::LanguageModel;
using daa::model::LanguageModelShape;
using daa::model::LmStats;
using daa::model::TokenIds;

constexpr int kRows = 4096, kD = 128, kVocab = 4096, kSeqLen = 128;

// A last pipeline stage without blocks: its input is the residual stream, its work the final
// norm, the tied head (a copy of the table) and the loss.
LanguageModelShape head_only_shape() {
  LanguageModelShape s;
  s.vocab = kVocab;
  s.d_model = kD;
  s.layers = 4;
  s.seq_len = kSeqLen;
  s.tie_embeddings = true;
  s.first_block = s.layers;
  s.moe.d_model = kD;
  return s;
}

void BM_head(benchmark::State& state) {
  LanguageModel<float> model(head_only_shape());
  model.set_head_chunk_rows(std::size_t(state.range(0)));
  Matrix<float> input("input", kRows, kD);
  TokenIds targets("targets", kRows);
  auto input_h = Kokkos::create_mirror_view(input);
  auto targets_h = Kokkos::create_mirror_view(targets);
  for (int t = 0; t < kRows; ++t) {
    targets_h(t) = int((std::size_t(t) * 2654435761u) % kVocab);
    for (int j = 0; j < kD; ++j) input_h(t, j) = float((t * 31 + j * 17) % 101) / 101.0f - 0.5f;
  }
  Kokkos::deep_copy(input, input_h);
  Kokkos::deep_copy(targets, targets_h);
  const auto step = [&] {
    model.params().zero_grads();
    LmStats stats = model.forward(0, kSeqLen, TokenIds("none", 0), input, targets, true);
    model.backward(0, Matrix<float>("none", 0, 0), stats);
    return stats.loss_sum;
  };
  step();  // allocates and first touches the buffers, as a trainer's first step does
  for (auto _ : state) {
    benchmark::DoNotOptimize(step());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = benchmark::Counter(3 * 2.0 * kRows * kD * double(kVocab) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  // --quick (the ctest smoke run): one round at the shortest time, only to show that it runs.
  const bool quick = daa::bench::take_quick_flag(argc, argv);
  const int rounds = quick ? 1 : 3;
  const double min_time = quick ? 0.01 : 0.5;
  Kokkos::initialize(argc, argv);
  daa::kernels::set_blas_threads(1);
  // Round-robin repeats (not Google Benchmark's back-to-back repetitions): compare medians.
  for (int rep = 0; rep < rounds; ++rep) {
    benchmark::RegisterBenchmark("BM_sgemm_peak", daa::bench::BM_sgemm_peak)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(min_time);
    for (const int rows : {64, 128, 256, 512, 1024, kRows})
      benchmark::RegisterBenchmark("BM_head", BM_head)
          ->Arg(rows)
          ->Unit(benchmark::kMillisecond)
          ->MinTime(min_time);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  Kokkos::finalize();
  return 0;
}
