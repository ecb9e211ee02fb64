// Micro-benchmarks of the linalg adapter: a large single-thread sgemm (the hardware reference the
// expert layers are compared with in scripts/bench-peer), expert-FFN-shaped GEMMs, attention's
// small batched products on the adapter's own small-GEMM kernel next to one cblas call each, the
// model's plain products on the adapter's blocked kernel next to OpenBLAS, and its bf16 products
// (mixed precision) next to oneDNN's bf16 matmul (onednn_peer.cpp).
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>
#include <vector>

#include "daa/kernels/linalg.hpp"
#include "onednn_peer.hpp"

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

// Large square sgemm through kernels::gemm: the practical FLOP ceiling of one core (on AVX-512
// builds the adapter's blocked kernel, ~1.9x OpenBLAS's Haswell kernels there).
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

// The model's plain products (daa-swarm's language model, inputs/text-mixture.toml, one rank;
// rows are tokens) on the blocked kernel of our own (BM_own_gemm) next to OpenBLAS (BM_blas_gemm),
// the two implementations kernels::gemm chooses between, and its bf16 twin (BM_bf16_gemm). Operands
// are dense (ld = stored columns).
//   expert (1024 rows per expert): fwd x W1, act W2; bwd dW2 += act^T dy, dh = dy W2^T,
//     dW1 += x^T dh, dx = dh W1^T; e512_* are the 2-rank halves
//   attention projections (4096 rows): qkv = x Wqkv, y = o Wo, dW += x^T dqkv, dx = dqkv Wqkv^T
//   head (chunks of 256 rows, vocab 4096): logits = x T^T, dT += dlogits^T x, dx = dlogits T
//   router (8 experts): x Wr, dx = dl Wr^T, dWr = x^T dl
struct PlainShape {
  Trans ta, tb;
  std::size_t m, n, k;
  float beta;
};

enum class Impl { own, blas, bf16 };

template <class T, Impl I>
void run_plain(benchmark::State& state, PlainShape s) {
  daa::kernels::set_blas_threads(1);
  if (I == Impl::bf16 && !daa::kernels::bf16_available())
    return state.SkipWithError("no bf16 product in this build (needs AVX512_BF16)");
  const std::size_t lda = s.ta == Trans::no ? s.k : s.m, ldb = s.tb == Trans::no ? s.n : s.k;
  std::vector<T> a(s.m * s.k), b(s.k * s.n), c(s.m * s.n, T(0));
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = T(i % 7) * T(0.125) - T(0.375);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = T(i % 5) * T(0.25) - T(0.5);
  for (auto _ : state) {
    if constexpr (I == Impl::own)
      daa::kernels::detail::gemm_own(s.ta, s.tb, s.m, s.n, s.k, T(1), a.data(), lda, b.data(), ldb,
                                     T(s.beta), c.data(), s.n);
    else if constexpr (I == Impl::bf16)
      daa::kernels::gemm(s.ta, s.tb, s.m, s.n, s.k, T(1), a.data(), lda, b.data(), ldb, T(s.beta),
                         c.data(), s.n, daa::kernels::Precision::bf16);
    else
      daa::kernels::detail::gemm_blas(s.ta, s.tb, s.m, s.n, s.k, T(1), a.data(), lda, b.data(), ldb,
                                      T(s.beta), c.data(), s.n);
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(s.m * s.n * s.k) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

void BM_own_gemm(benchmark::State& state, PlainShape s) {
  run_plain<float, Impl::own>(state, s);
}
void BM_blas_gemm(benchmark::State& state, PlainShape s) {
  run_plain<float, Impl::blas>(state, s);
}
// Mixed precision's product (bf16 operands, fp32 sums) on the same shapes.
void BM_bf16_gemm(benchmark::State& state, PlainShape s) {
  run_plain<float, Impl::bf16>(state, s);
}
// The peer: oneDNN's bf16 matmul on the same shapes (one thread). As a training product it takes
// fp32 operands, so each call first converts both to bf16 (two reorders), as our packing does;
// BM_onednn_bf16_preconverted times the matmul alone on operands already in bf16 (the bound for a
// design that keeps weights and activations in bf16).
daa::bench::PeerShape peer_shape(const PlainShape& s) {
  return {s.ta == Trans::yes, s.tb == Trans::yes, s.m, s.n, s.k, s.beta};
}
void BM_onednn_bf16(benchmark::State& state, PlainShape s) {
  daa::bench::run_onednn_bf16(state, peer_shape(s), true);
}
void BM_onednn_bf16_preconverted(benchmark::State& state, PlainShape s) {
  daa::bench::run_onednn_bf16(state, peer_shape(s), false);
}

void BM_own_dgemm(benchmark::State& state, PlainShape s) {
  run_plain<double, Impl::own>(state, s);
}
void BM_blas_dgemm(benchmark::State& state, PlainShape s) {
  run_plain<double, Impl::blas>(state, s);
}

constexpr Trans N = Trans::no, T = Trans::yes;
#define DAA_PLAIN_SHAPE(name, ...)                                                               \
  BENCHMARK_CAPTURE(BM_own_gemm, name, PlainShape{__VA_ARGS__})->Unit(benchmark::kMicrosecond);  \
  BENCHMARK_CAPTURE(BM_bf16_gemm, name, PlainShape{__VA_ARGS__})->Unit(benchmark::kMicrosecond); \
  BENCHMARK_CAPTURE(BM_blas_gemm, name, PlainShape{__VA_ARGS__})->Unit(benchmark::kMicrosecond)
DAA_PLAIN_SHAPE(e_w1_nn_1024x256x128, N, N, 1024, 256, 128, 0.0f);
DAA_PLAIN_SHAPE(e_w2_nn_1024x128x256, N, N, 1024, 128, 256, 0.0f);
DAA_PLAIN_SHAPE(e_dw2_tn_256x128x1024, T, N, 256, 128, 1024, 1.0f);
DAA_PLAIN_SHAPE(e_dh_nt_1024x256x128, N, T, 1024, 256, 128, 0.0f);
DAA_PLAIN_SHAPE(e_dw1_tn_128x256x1024, T, N, 128, 256, 1024, 1.0f);
DAA_PLAIN_SHAPE(e_dx_nt_1024x128x256, N, T, 1024, 128, 256, 1.0f);
DAA_PLAIN_SHAPE(e512_w1_nn_512x256x128, N, N, 512, 256, 128, 0.0f);
DAA_PLAIN_SHAPE(e512_dw2_tn_256x128x512, T, N, 256, 128, 512, 1.0f);
DAA_PLAIN_SHAPE(a_qkv_nn_4096x384x128, N, N, 4096, 384, 128, 0.0f);
DAA_PLAIN_SHAPE(a_o_nn_4096x128x128, N, N, 4096, 128, 128, 0.0f);
DAA_PLAIN_SHAPE(a_dwqkv_tn_128x384x4096, T, N, 128, 384, 4096, 1.0f);
DAA_PLAIN_SHAPE(a_dx_nt_4096x128x384, N, T, 4096, 128, 384, 0.0f);
DAA_PLAIN_SHAPE(a_dwo_tn_128x128x4096, T, N, 128, 128, 4096, 1.0f);
DAA_PLAIN_SHAPE(a_dxo_nt_4096x128x128, N, T, 4096, 128, 128, 0.0f);
DAA_PLAIN_SHAPE(h_logits_nt_256x4096x128, N, T, 256, 4096, 128, 0.0f);
DAA_PLAIN_SHAPE(h_dt_tn_4096x128x256, T, N, 4096, 128, 256, 1.0f);
DAA_PLAIN_SHAPE(h_dx_nn_256x128x4096, N, N, 256, 128, 4096, 0.0f);
DAA_PLAIN_SHAPE(r_fwd_nn_4096x8x128, N, N, 4096, 8, 128, 0.0f);
DAA_PLAIN_SHAPE(r_dx_nt_4096x128x8, N, T, 4096, 128, 8, 0.0f);
DAA_PLAIN_SHAPE(r_dw_tn_128x8x4096, T, N, 128, 8, 4096, 0.0f);
// Few rows (generation), narrow columns, and large squares: where the dispatch rule's bounds lie.
DAA_PLAIN_SHAPE(g_nn_1x384x128, N, N, 1, 384, 128, 0.0f);
DAA_PLAIN_SHAPE(g_nn_4x384x128, N, N, 4, 384, 128, 0.0f);
DAA_PLAIN_SHAPE(g_nn_16x384x128, N, N, 16, 384, 128, 0.0f);
DAA_PLAIN_SHAPE(g_nt_8x4096x128, N, T, 8, 4096, 128, 0.0f);
DAA_PLAIN_SHAPE(w_nn_4096x16x128, N, N, 4096, 16, 128, 0.0f);
DAA_PLAIN_SHAPE(w_nn_4096x24x128, N, N, 4096, 24, 128, 0.0f);
DAA_PLAIN_SHAPE(sq_nn_512x512x512, N, N, 512, 512, 512, 0.0f);
DAA_PLAIN_SHAPE(sq_nn_1024x1024x1024, N, N, 1024, 1024, 1024, 0.0f);
DAA_PLAIN_SHAPE(sq_nn_2048x2048x2048, N, N, 2048, 2048, 2048, 0.0f);
#undef DAA_PLAIN_SHAPE

// Mixed precision against its peer: the model's products in bf16 on our kernel and on oneDNN.
#define DAA_BF16_PEER(name, ...)                                                                   \
  BENCHMARK_CAPTURE(BM_onednn_bf16, name, PlainShape{__VA_ARGS__})->Unit(benchmark::kMicrosecond); \
  BENCHMARK_CAPTURE(BM_onednn_bf16_preconverted, name, PlainShape{__VA_ARGS__})                    \
      ->Unit(benchmark::kMicrosecond)
DAA_BF16_PEER(e_w1_nn_1024x256x128, N, N, 1024, 256, 128, 0.0f);
DAA_BF16_PEER(e_w2_nn_1024x128x256, N, N, 1024, 128, 256, 0.0f);
DAA_BF16_PEER(e_dw2_tn_256x128x1024, T, N, 256, 128, 1024, 1.0f);
DAA_BF16_PEER(e_dh_nt_1024x256x128, N, T, 1024, 256, 128, 0.0f);
DAA_BF16_PEER(e_dw1_tn_128x256x1024, T, N, 128, 256, 1024, 1.0f);
DAA_BF16_PEER(e_dx_nt_1024x128x256, N, T, 1024, 128, 256, 1.0f);
DAA_BF16_PEER(a_qkv_nn_4096x384x128, N, N, 4096, 384, 128, 0.0f);
DAA_BF16_PEER(a_dwqkv_tn_128x384x4096, T, N, 128, 384, 4096, 1.0f);
DAA_BF16_PEER(a_dx_nt_4096x128x384, N, T, 4096, 128, 384, 0.0f);
DAA_BF16_PEER(h_logits_nt_256x4096x128, N, T, 256, 4096, 128, 0.0f);
DAA_BF16_PEER(h_dt_tn_4096x128x256, T, N, 4096, 128, 256, 1.0f);
DAA_BF16_PEER(sq_nn_2048x2048x2048, N, N, 2048, 2048, 2048, 0.0f);
#undef DAA_BF16_PEER

// Double precision (the classifier's and the tests' reference paths) on a few of the shapes.
#define DAA_PLAIN_SHAPE_D(name, ...)                                                             \
  BENCHMARK_CAPTURE(BM_own_dgemm, name, PlainShape{__VA_ARGS__})->Unit(benchmark::kMicrosecond); \
  BENCHMARK_CAPTURE(BM_blas_dgemm, name, PlainShape{__VA_ARGS__})->Unit(benchmark::kMicrosecond)
DAA_PLAIN_SHAPE_D(e_w1_nn_1024x256x128, N, N, 1024, 256, 128, 0.0f);
DAA_PLAIN_SHAPE_D(e_dw2_tn_256x128x1024, T, N, 256, 128, 1024, 1.0f);
DAA_PLAIN_SHAPE_D(h_logits_nt_256x4096x128, N, T, 256, 4096, 128, 0.0f);
DAA_PLAIN_SHAPE_D(w_nn_4096x8x128, N, N, 4096, 8, 128, 0.0f);
DAA_PLAIN_SHAPE_D(sq_nn_1024x1024x1024, N, N, 1024, 1024, 1024, 0.0f);
#undef DAA_PLAIN_SHAPE_D

}  // namespace

int main(int argc, char** argv) {
  Kokkos::initialize(argc, argv);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  Kokkos::finalize();
  return 0;
}
