// Attention forward + backward at the main job's sizes (inputs/text-mixture.toml: 32 sequences
// of 128 tokens, d_model 128, 4 heads of 32, blocks of 64 keys) next to a large single-thread
// sgemm measured in the same run, repeated round-robin so load changes hit all alike.
//   BM_sgemm_peak           2048^3 sgemm: the practical FLOP ceiling of one core
//   BM_attention_core       the batched-GEMM blocked attention kernels (fwd + bwd, no projections)
//   BM_attention_rowwise    the previous kernels (one thread per query row, scalar loops), kept
//                           here verbatim as the baseline of the same measurement
//   BM_attention_layer      CausalSelfAttention<float> forward + backward (projections, RoPE)
// GFLOPS counts the causal score and value products (fwd 4 d per visible pair, bwd twice that)
// and, for the layer, CausalSelfAttention::flops x 3. Run: build/tests/bench/bench_attention
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "bench_common.hpp"
#include "daa/kernels/attention_kernels.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/model/attention.hpp"
#include "daa/model/params.hpp"

namespace {

using daa::kernels::AttentionDims;
using daa::kernels::Matrix;
using daa::kernels::Range;
using daa::kernels::Trans;
using daa::kernels::Vector;

constexpr int kSequences = 32, kSeqLen = 128, kHeads = 4, kHeadDim = 32, kBlock = 64;
constexpr int kRows = kSequences * kSeqLen, kD = kHeads * kHeadDim;

// Previous kernels (commit efaaf52), unchanged but for names and std::exp.
namespace previous {

template <class T>
void causal_attention_forward(const Matrix<T>& qkv, const AttentionDims& dims, int block,
                              const Kokkos::View<T**, daa::kernels::MemSpace>& scores,
                              const Matrix<T>& out, const Vector<T>& lse) {
  const int seq_len = dims.seq_len, heads = dims.heads, head_dim = dims.head_dim;
  const int d = dims.d_model();
  const T scale = T(1) / T(std::sqrt(double(head_dim)));
  Kokkos::parallel_for(
      "causal_attention_forward", Range(0, qkv.extent(0) * heads), KOKKOS_LAMBDA(const int item) {
        const int i = item % seq_len, bh = item / seq_len;
        const int h = bh % heads, seq_start = (bh / heads) * seq_len;
        const int row = seq_start + i;
        const int qc = h * head_dim, kc = d + h * head_dim, vc = 2 * d + h * head_dim;
        T running_max = 0, running_sum = 0;
        for (int c = 0; c < head_dim; ++c) out(row, qc + c) = 0;
        for (int j0 = 0; j0 <= i; j0 += block) {
          const int j1 = j0 + block <= i + 1 ? j0 + block : i + 1;
          T block_max = 0;
          for (int j = j0; j < j1; ++j) {
            T s = 0;
            for (int c = 0; c < head_dim; ++c) s += qkv(row, qc + c) * qkv(seq_start + j, kc + c);
            s *= scale;
            scores(item, j - j0) = s;
            block_max = (j == j0 || s > block_max) ? s : block_max;
          }
          // The first block sets the max; later ones rescale what came before.
          if (j0 == 0) {
            running_max = block_max;
          } else if (block_max > running_max) {
            const T alpha = std::exp(running_max - block_max);
            running_sum *= alpha;
            for (int c = 0; c < head_dim; ++c) out(row, qc + c) *= alpha;
            running_max = block_max;
          }
          for (int j = j0; j < j1; ++j) {
            const T p = std::exp(scores(item, j - j0) - running_max);
            running_sum += p;
            for (int c = 0; c < head_dim; ++c) out(row, qc + c) += p * qkv(seq_start + j, vc + c);
          }
        }
        const T inv = T(1) / running_sum;
        for (int c = 0; c < head_dim; ++c) out(row, qc + c) *= inv;
        lse(item) = running_max + std::log(running_sum);
      });
}

// Gradients of causal_attention_forward with respect to the roped q, k and v, written (not
// added) into dqkv [n, 3 * d_model]. Probabilities are recomputed as exp(score - lse). With
// delta_i = dout_i . out_i and ds_ij = p_ij (dout_i . v_j - delta_i):
//   dq_i = scale sum_{j<=i} ds_ij k_j      (one thread per query row)
//   dk_j = scale sum_{i>=j} ds_ij q_i,  dv_j = sum_{i>=j} p_ij dout_i   (one thread per key row)
// Each thread owns the rows it writes, so no atomics; sums run in index order. delta: scratch
// [batch * heads * seq_len].
template <class T>
void causal_attention_backward(const Matrix<T>& qkv, const Matrix<T>& out, const Vector<T>& lse,
                               const Matrix<T>& dout, const AttentionDims& dims,
                               const Vector<T>& delta, const Matrix<T>& dqkv) {
  const int seq_len = dims.seq_len, heads = dims.heads, head_dim = dims.head_dim;
  const int d = dims.d_model();
  const T scale = T(1) / T(std::sqrt(double(head_dim)));
  const int items = qkv.extent(0) * heads;
  Kokkos::parallel_for(
      "attention_backward_delta", Range(0, items), KOKKOS_LAMBDA(const int item) {
        const int i = item % seq_len, bh = item / seq_len;
        const int row = (bh / heads) * seq_len + i, oc = (bh % heads) * head_dim;
        T sum = 0;
        for (int c = 0; c < head_dim; ++c) sum += dout(row, oc + c) * out(row, oc + c);
        delta(item) = sum;
      });
  Kokkos::parallel_for(
      "attention_backward_dq", Range(0, items), KOKKOS_LAMBDA(const int item) {
        const int i = item % seq_len, bh = item / seq_len;
        const int h = bh % heads, seq_start = (bh / heads) * seq_len;
        const int row = seq_start + i;
        const int qc = h * head_dim, kc = d + h * head_dim, vc = 2 * d + h * head_dim;
        const T row_lse = lse(item), row_delta = delta(item);
        for (int c = 0; c < head_dim; ++c) dqkv(row, qc + c) = 0;
        for (int j = 0; j <= i; ++j) {
          const int key = seq_start + j;
          T s = 0, dp = 0;
          for (int c = 0; c < head_dim; ++c) {
            s += qkv(row, qc + c) * qkv(key, kc + c);
            dp += dout(row, qc + c) * qkv(key, vc + c);
          }
          const T ds = std::exp(s * scale - row_lse) * (dp - row_delta) * scale;
          for (int c = 0; c < head_dim; ++c) dqkv(row, qc + c) += ds * qkv(key, kc + c);
        }
      });
  Kokkos::parallel_for(
      "attention_backward_dkv", Range(0, items), KOKKOS_LAMBDA(const int item) {
        const int j = item % seq_len, bh = item / seq_len;
        const int h = bh % heads, seq_start = (bh / heads) * seq_len;
        const int key = seq_start + j, lse_base = bh * seq_len;
        const int qc = h * head_dim, kc = d + h * head_dim, vc = 2 * d + h * head_dim;
        for (int c = 0; c < head_dim; ++c) {
          dqkv(key, kc + c) = 0;
          dqkv(key, vc + c) = 0;
        }
        for (int i = j; i < seq_len; ++i) {
          const int row = seq_start + i;
          T s = 0, dp = 0;
          for (int c = 0; c < head_dim; ++c) {
            s += qkv(row, qc + c) * qkv(key, kc + c);
            dp += dout(row, qc + c) * qkv(key, vc + c);
          }
          const T p = std::exp(s * scale - lse(lse_base + i));
          const T ds = p * (dp - delta(lse_base + i)) * scale;
          for (int c = 0; c < head_dim; ++c) {
            dqkv(key, kc + c) += ds * qkv(row, qc + c);
            dqkv(key, vc + c) += p * dout(row, qc + c);
          }
        }
      });
}

}  // namespace previous

template <class View>
void fill(const View& m, float scale) {
  auto h = Kokkos::create_mirror_view(m);
  for (std::size_t i = 0; i < h.size(); ++i)
    h.data()[i] = scale * float((i * 2654435761u) % 1000) / 1000.0f - scale / 2;
  Kokkos::deep_copy(m, h);
}

double core_flops() {
  const double pairs = double(kRows) * (kSeqLen + 1) / 2;
  return 3 * 4.0 * kD * pairs;  // forward + backward (twice the forward)
}

struct Inputs {
  AttentionDims dims{kSeqLen, kHeads, kHeadDim};
  Matrix<float> qkv{"qkv", kRows, 3 * kD}, out{"out", kRows, kD}, dout{"dout", kRows, kD};
  Matrix<float> dqkv{"dqkv", kRows, 3 * kD};
  Vector<float> lse{"lse", kRows*kHeads}, stat{"stat", kRows*kHeads};
  Inputs() {
    fill(qkv, 2.0f);
    fill(dout, 1.0f);
  }
};

void BM_attention_core(benchmark::State& state) {
  Inputs in;
  const int per_call = int(state.range(0));
  daa::kernels::BlockScratch<float> p("p", per_call, kBlock, kBlock),
      dp("dp", per_call, kBlock, kBlock);
  for (auto _ : state) {
    daa::kernels::causal_attention_forward(in.qkv, in.dims, kBlock, per_call, p, in.stat, in.out,
                                           in.lse);
    daa::kernels::causal_attention_backward(in.qkv, in.out, in.lse, in.dout, in.dims, kBlock,
                                            per_call, p, dp, in.stat, in.dqkv);
    Kokkos::fence();
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] =
      benchmark::Counter(core_flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_attention_rowwise(benchmark::State& state) {
  Inputs in;
  Kokkos::View<float**, daa::kernels::MemSpace> scores("scores", kRows * kHeads, kBlock);
  for (auto _ : state) {
    previous::causal_attention_forward(in.qkv, in.dims, kBlock, scores, in.out, in.lse);
    previous::causal_attention_backward(in.qkv, in.out, in.lse, in.dout, in.dims, in.stat, in.dqkv);
    Kokkos::fence();
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] =
      benchmark::Counter(core_flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_attention_layer(benchmark::State& state) {
  daa::model::ParamStore<float> store;
  daa::model::CausalSelfAttention<float> attn(
      store, "blk0.attn",
      {.d_model = kD, .heads = kHeads, .max_seq_len = kSeqLen, .block = kBlock});
  store.allocate();
  fill(store.values(), 0.2f);
  Matrix<float> x("x", kRows, kD), y("y", kRows, kD), dx("dx", kRows, kD);
  fill(x, 2.0f);
  for (auto _ : state) {
    attn.forward(0, x, kSeqLen, y);
    attn.backward(0, y, dx);
    Kokkos::fence();
    benchmark::ClobberMemory();
  }
  const double flops = 3 * daa::model::CausalSelfAttention<float>::flops(kRows, kSeqLen, kD);
  state.counters["GFLOPS"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// max |a - b| / max |b| over a whole tensor.
template <class View>
double relative_difference(const View& a, const View& b) {
  auto ha = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), a);
  auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), b);
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < ha.size(); ++i) {
    diff = std::max(diff, std::abs(double(ha.data()[i]) - double(hb.data()[i])));
    scale = std::max(scale, std::abs(double(hb.data()[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// The batched kernels against the previous ones on the same float inputs: only the summation
// order (BLAS blocks instead of one running sum per row) and exp differ.
void compare_with_previous() {
  Inputs a, b;
  daa::kernels::BlockScratch<float> p("p", 4, kBlock, kBlock), dp("dp", 4, kBlock, kBlock);
  daa::kernels::causal_attention_forward(a.qkv, a.dims, kBlock, 4, p, a.stat, a.out, a.lse);
  daa::kernels::causal_attention_backward(a.qkv, a.out, a.lse, a.dout, a.dims, kBlock, 4, p, dp,
                                          a.stat, a.dqkv);
  Kokkos::View<float**, daa::kernels::MemSpace> scores("scores", kRows * kHeads, kBlock);
  previous::causal_attention_forward(b.qkv, b.dims, kBlock, scores, b.out, b.lse);
  previous::causal_attention_backward(b.qkv, b.out, b.lse, b.dout, b.dims, b.stat, b.dqkv);
  Kokkos::fence();
  std::printf(
      "batched vs previous kernels, max relative difference: out %.2e, lse %.2e, dqkv %.2e\n",
      relative_difference(a.out, b.out), relative_difference(a.lse, b.lse),
      relative_difference(a.dqkv, b.dqkv));
}

}  // namespace

int main(int argc, char** argv) {
  // --quick (the ctest smoke run): one round at the shortest time, only to show that it runs.
  const bool quick = daa::bench::take_quick_flag(argc, argv);
  const int rounds = quick ? 1 : 3;
  const double min_time = quick ? 0.01 : 0.5;
  Kokkos::initialize(argc, argv);
  daa::kernels::set_blas_threads(1);
  compare_with_previous();
  // Round-robin repeats (not Google Benchmark's back-to-back repetitions): compare medians.
  for (int rep = 0; rep < rounds; ++rep) {
    benchmark::RegisterBenchmark("BM_sgemm_peak", daa::bench::BM_sgemm_peak)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(min_time);
    for (const int per_call : {1, 4, kSequences})
      benchmark::RegisterBenchmark("BM_attention_core", BM_attention_core)
          ->Arg(per_call)
          ->Unit(benchmark::kMillisecond)
          ->MinTime(min_time);
    benchmark::RegisterBenchmark("BM_attention_rowwise", BM_attention_rowwise)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(min_time);
    benchmark::RegisterBenchmark("BM_attention_layer", BM_attention_layer)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(min_time);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  Kokkos::finalize();
  return 0;
}
