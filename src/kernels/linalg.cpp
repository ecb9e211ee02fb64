// Host back end of the linalg adapter: OpenBLAS cblas, plus a register-blocked kernel of our own.
// The kernel runs the small products of a strided batch (attention's per-sequence blocks), where
// OpenBLAS's fixed cost per call outweighs the arithmetic, and, cache-blocked, the plain products
// (experts, projections, head) where it is about twice as fast as OpenBLAS here: this machine's
// environment pins OpenBLAS to its AVX2 (Haswell) kernels, while ours uses AVX-512 where compiled
// in. OpenBLAS keeps narrow products (n under half a panel: the router's), targets without
// AVX-512, and multi-threaded BLAS; see use_own. The CUDA build adds a cuBLAS twin.
#include "daa/kernels/linalg.hpp"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

namespace daa::kernels {
namespace {

CBLAS_TRANSPOSE to_cblas(Trans t) {
  return t == Trans::no ? CblasNoTrans : CblasTrans;
}

// BLAS rejects a leading dimension of 0 even for empty operands.
int ld(std::size_t v) {
  return static_cast<int>(std::max<std::size_t>(v, 1));
}

}  // namespace

namespace {

// Small GEMM. A call of cblas_sgemm on a 64x64x32 product costs about as much in packing and a
// separate beta pass as in arithmetic, so small products of a batch run here instead: C is
// computed in tiles of MR rows x NR columns held in vector registers across the whole k loop,
// op(B)'s rows are the vector dimension, op(A)'s elements are scalar broadcasts. Vector
// extensions (GCC, Clang) rather than intrinsics, so any target compiles it: vectors of 64 bytes
// where AVX-512 is on (32 registers), else of 32 bytes counted as 16 registers (AVX2; SSE and
// NEON split each vector in two).
#if defined(__AVX512F__)
#define DAA_SMALL_GEMM_VECTOR_BYTES 64
constexpr int kVectorRegisters = 32;
#else
#define DAA_SMALL_GEMM_VECTOR_BYTES 32
constexpr int kVectorRegisters = 16;
#endif
constexpr std::size_t kVectorBytes = DAA_SMALL_GEMM_VECTOR_BYTES;

template <class T>
struct SimdOf;
template <>
struct SimdOf<float> {
  typedef float type __attribute__((vector_size(DAA_SMALL_GEMM_VECTOR_BYTES)));
};
template <>
struct SimdOf<double> {
  typedef double type __attribute__((vector_size(DAA_SMALL_GEMM_VECTOR_BYTES)));
};
#undef DAA_SMALL_GEMM_VECTOR_BYTES

// Tile shape: MR rows x 2 vectors (8 x 32 floats with AVX-512). MR * 2 accumulators, 2 rows of B
// and a broadcast must fit in the vector registers, and the MR * 2 independent FMA chains cover
// the FMA latency. With 32 registers, 8 rows: of 4x2, 12x2, 4x4, 6x4 and 16x1 (timed on
// attention's 64x64x32 and 64x32x64 products) 8x2 was the fastest or near it on every shape, and
// 32 columns is head_dim, so n = 32 wastes no lanes. With 16 (AVX2), 6 rows: 8 spill, and on the
// same products (built for x86-64-v3) 6x2 ran at ~73 GFLOP/s against ~55 for 8x2 and ~60 for 4x2.
template <class T>
struct SmallTile {
  static constexpr int lanes = int(kVectorBytes / sizeof(T));
  static constexpr int mr = kVectorRegisters >= 32 ? 8 : 6;
  static constexpr int nv = 2;
  static constexpr int nr = nv * lanes;
};

// Batched products up to this size take the small kernel, without cache blocking: one k x NR
// panel of op(B) and MR rows of op(A) should stay in L1. Larger items of a batch go through the
// plain gemm's choice (the blocked kernel or OpenBLAS).
constexpr std::size_t kSmallMaxM = 128, kSmallMaxN = 128, kSmallMaxK = 256;

bool is_small(std::size_t m, std::size_t n, std::size_t k) {
  return m <= kSmallMaxM && n <= kSmallMaxN && k <= kSmallMaxK;
}

// op(B) copied into panels of NR columns, each k x NR contiguous and zero-padded past n, so the
// tile loop reads whole vectors with a fixed stride whatever trans_b and n are. Grown on demand,
// kept per thread (host only: the CUDA build batches on cuBLAS).
template <class T>
class PackBuffer {
 public:
  T* get(std::size_t size) {
    if (size > capacity_) {
      data_.reset(static_cast<T*>(::operator new(size * sizeof(T), std::align_val_t(64))));
      capacity_ = size;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(T* p) const { ::operator delete(p, std::align_val_t(64)); }
  };
  std::unique_ptr<T, Free> data_;
  std::size_t capacity_ = 0;
};

// Interleaves the low (high) halves of a and b: (a0, b0, a1, b1, ...). Vectors by reference: by
// value, a target without them in registers would warn of an ABI change (-Wpsabi).
template <class V, std::size_t... I>
[[gnu::always_inline]] inline void interleave(const V& a, const V& b, V& low, V& high,
                                              std::index_sequence<I...>) {
  constexpr std::size_t n = sizeof...(I);
  low = __builtin_shufflevector(a, b, (I % 2 ? n + I / 2 : I / 2)...);
  high = __builtin_shufflevector(a, b, (I % 2 ? n + n / 2 + I / 2 : n / 2 + I / 2)...);
}

// Transposes the lanes x lanes block held in r[0, lanes) in registers: each of log2(lanes) rounds
// interleaves row i with row i + lanes / 2, a perfect shuffle that rotates the bits of (row,
// column) by one, so after log2(lanes) rounds they are (column, row). A scalar transpose costs a
// load and a store per element, as much as the tiles' FMAs on a 64x64x32 product.
template <class T>
[[gnu::always_inline]] inline void transpose_block(typename SimdOf<T>::type* r) {
  using V = typename SimdOf<T>::type;
  constexpr int lanes = SmallTile<T>::lanes;
  for (int width = 1; width < lanes; width *= 2) {
    V t[lanes];
#pragma GCC unroll 16
    for (int i = 0; i < lanes / 2; ++i)
      interleave(r[i], r[i + lanes / 2], t[2 * i], t[2 * i + 1], std::make_index_sequence<lanes>());
#pragma GCC unroll 16
    for (int i = 0; i < lanes; ++i) r[i] = t[i];
  }
}

template <class T>
void pack_b(Trans trans_b, std::size_t n, std::size_t k, const T* b, std::size_t ldb, T* packed) {
  using V = typename SimdOf<T>::type;
  constexpr std::size_t nr = SmallTile<T>::nr, lanes = SmallTile<T>::lanes;
  for (std::size_t j0 = 0; j0 < n; j0 += nr) {
    const std::size_t cols = std::min(nr, n - j0);
    T* panel = packed + j0 * k;
    if (trans_b == Trans::no) {
      // Whole panels by a copy of fixed size, which compiles to vector moves rather than a call.
      if (cols == nr)
        for (std::size_t p = 0; p < k; ++p)
          std::memcpy(panel + p * nr, b + p * ldb + j0, nr * sizeof(T));
      else
        for (std::size_t p = 0; p < k; ++p) {
          std::memcpy(panel + p * nr, b + p * ldb + j0, cols * sizeof(T));
          std::fill(panel + p * nr + cols, panel + (p + 1) * nr, T(0));
        }
      continue;
    }
    // op(B)(p, j) = b[j * ldb + p]: lanes x lanes blocks through registers, the edges element by
    // element, row by row of the stored B (reading down its columns instead would touch a line
    // per element at a stride of ldb, which thrashes one L1 set when ldb is a multiple of 4 KiB).
    for (std::size_t j = 0; j < cols; j += lanes) {
      const std::size_t rows = std::min(lanes, cols - j);
      std::size_t p = 0;
      if (rows == lanes)
        for (; p + lanes <= k; p += lanes) {
          V r[lanes];
          for (std::size_t t = 0; t < lanes; ++t)
            std::memcpy(&r[t], b + (j0 + j + t) * ldb + p, sizeof(V));
          transpose_block<T>(r);
          for (std::size_t t = 0; t < lanes; ++t)
            std::memcpy(panel + (p + t) * nr + j, &r[t], sizeof(V));
        }
      for (std::size_t t = j; t < j + rows; ++t) {
        const T* src = b + (j0 + t) * ldb;
        for (std::size_t q = p; q < k; ++q) panel[q * nr + t] = src[q];
      }
    }
    if (cols < nr)
      for (std::size_t p = 0; p < k; ++p)
        std::fill(panel + p * nr + cols, panel + (p + 1) * nr, T(0));
  }
}

// Where op(A)(i, p) of a tile is: a[i * lda + p] (A stored as is), a[p * lda + i] (A stored
// transposed), or a[p * MR + i] with the full tile height MR (a block packed by pack_a below; a
// compile-time stride, and a separate instantiation: reading the packed block through the
// `columns` one with lda = MR, GCC spilled a row of B to the stack in the k loop and the trans_a
// products ran at ~105 GFLOP/s against ~185 for the others).
enum class ALayout { rows, columns, packed };

// One tile: rows [0, MR) of C (at c) and the NR columns of one packed panel, of which the first
// `cols` are real.
template <class T, int MR, ALayout A>
[[gnu::always_inline]] inline void small_tile(std::size_t k, T alpha, const T* a, std::size_t lda,
                                              const T* panel, T beta, T* c, std::size_t ldc,
                                              std::size_t cols) {
  using V = typename SimdOf<T>::type;
  constexpr int nv = SmallTile<T>::nv, lanes = SmallTile<T>::lanes, nr = SmallTile<T>::nr;
  V acc[MR][nv];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
    for (int v = 0; v < nv; ++v) acc[i][v] = V{};
  for (std::size_t p = 0; p < k; ++p) {
    V row[nv];
#pragma GCC unroll 16
    for (int v = 0; v < nv; ++v)
      std::memcpy(&row[v], panel + p * nr + std::size_t(v) * lanes, sizeof(V));
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const T ai = A == ALayout::rows      ? a[std::size_t(i) * lda + p]
                   : A == ALayout::columns ? a[p * lda + std::size_t(i)]
                                           : a[p * std::size_t(SmallTile<T>::mr) + std::size_t(i)];
#pragma GCC unroll 16
      for (int v = 0; v < nv; ++v) acc[i][v] += ai * row[v];
    }
  }
  // beta == 0 must not read C: it may hold garbage (NaN), which BLAS overwrites.
  if (cols == std::size_t(nr)) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (int v = 0; v < nv; ++v) {
        T* out = c + std::size_t(i) * ldc + std::size_t(v) * lanes;
        V r = alpha * acc[i][v];
        if (beta != T(0)) {
          V old;
          std::memcpy(&old, out, sizeof(V));
          r += beta * old;
        }
        std::memcpy(out, &r, sizeof(V));
      }
  } else {
    for (int i = 0; i < MR; ++i) {
      T tile[nr];
      std::memcpy(tile, acc[i], sizeof(tile));
      T* out = c + std::size_t(i) * ldc;
      for (std::size_t j = 0; j < cols; ++j)
        out[j] = beta != T(0) ? alpha * tile[j] + beta * out[j] : alpha * tile[j];
    }
  }
}

// The last m % MR rows, one instantiation per count.
template <class T, int R, ALayout A>
void small_tail(std::size_t rows, std::size_t k, T alpha, const T* a, std::size_t lda,
                const T* panel, T beta, T* c, std::size_t ldc, std::size_t cols) {
  if constexpr (R > 0) {
    if (rows == R)
      small_tile<T, R, A>(k, alpha, a, lda, panel, beta, c, ldc, cols);
    else
      small_tail<T, R - 1, A>(rows, k, alpha, a, lda, panel, beta, c, ldc, cols);
  }
}

// Rows [0, m) of C against the packed panels of op(B) (k x n). Row i of op(A) starts at a +
// i * row_step: lda when A is stored untransposed, 1 when transposed, and k (with lda = MR) for a
// block packed by pack_a.
template <class T, ALayout A>
void small_gemm_packed(std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a,
                       std::size_t lda, std::size_t row_step, const T* packed, T beta, T* c,
                       std::size_t ldc) {
  constexpr int mr = SmallTile<T>::mr;
  constexpr std::size_t nr = SmallTile<T>::nr;
  for (std::size_t j0 = 0; j0 < n; j0 += nr) {
    const std::size_t cols = std::min(nr, n - j0);
    const T* panel = packed + j0 * k;
    std::size_t i0 = 0;
    for (; i0 + mr <= m; i0 += mr)
      small_tile<T, mr, A>(k, alpha, a + i0 * row_step, lda, panel, beta, c + i0 * ldc + j0, ldc,
                           cols);
    if (i0 < m)
      small_tail<T, mr - 1, A>(m - i0, k, alpha, a + i0 * row_step, lda, panel, beta,
                               c + i0 * ldc + j0, ldc, cols);
  }
}

// C = beta * C, the whole product when alpha == 0 or k == 0. BLAS semantics: alpha == 0 reads
// neither A nor B (0 * NaN would otherwise leak into C), beta == 0 does not read C.
template <class T>
void scale_c(std::size_t m, std::size_t n, T beta, T* c, std::size_t ldc) {
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j)
      c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

template <class T>
void small_gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
                const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c,
                std::size_t ldc) {
  if (alpha == T(0) || k == 0) return scale_c(m, n, beta, c, ldc);
  constexpr std::size_t nr = SmallTile<T>::nr;
  thread_local PackBuffer<T> buffer;
  T* packed = buffer.get((n + nr - 1) / nr * nr * k);
  pack_b(trans_b, n, k, b, ldb, packed);
  if (trans_a == Trans::no)
    small_gemm_packed<T, ALayout::rows>(m, n, k, alpha, a, lda, lda, packed, beta, c, ldc);
  else
    small_gemm_packed<T, ALayout::columns>(m, n, k, alpha, a, lda, 1, packed, beta, c, ldc);
}

// Blocked GEMM: the small kernel's tiles over cache blocks, for the medium products of plain gemm
// calls. For each block of kBlockK steps of k and kBlockN columns, op(B) is packed once (KC x NR
// panels, kBlockK * kBlockN elements: 512 KiB of floats, for L2) and every row tile of C runs
// over it; rows go in blocks of kBlockM so the A rows a panel meets again stay in L2, and one
// panel (32 KiB) is reused by all row tiles of the block. k blocks after the first add to C
// (beta 1). When A is stored transposed its block is packed too, MR rows of op(A) contiguous per
// k step: read in place each step would touch a new line of A at a stride of lda (16 KiB for the
// head's dlogits, all in one L1 set).
constexpr std::size_t kBlockK = 256, kBlockN = 512, kBlockM = 240;

template <class T>
void pack_a(std::size_t m, std::size_t k, const T* a, std::size_t lda, T* packed) {
  constexpr std::size_t mr = SmallTile<T>::mr;
  // Two tiles at a time down the rows of the stored A, so each line read (2 MR elements with 8
  // rows of floats) is used whole, and into two destination streams only: writing every tile at
  // each step instead (p outer) meets k * MR elements apart, 8 KiB, all in one L1 set, and ran
  // the trans_a products at half speed. Fixed-size copies, as vector moves.
  std::size_t i0 = 0;
  for (; i0 + 2 * mr <= m; i0 += 2 * mr) {
    T* dst = packed + i0 * k;
    for (std::size_t p = 0; p < k; ++p) {
      std::memcpy(dst + p * mr, a + p * lda + i0, mr * sizeof(T));
      std::memcpy(dst + k * mr + p * mr, a + p * lda + i0 + mr, mr * sizeof(T));
    }
  }
  for (; i0 < m; i0 += mr) {
    const std::size_t rows = std::min(mr, m - i0);
    T* dst = packed + i0 * k;
    for (std::size_t p = 0; p < k; ++p)
      for (std::size_t i = 0; i < rows; ++i) dst[p * mr + i] = a[p * lda + i0 + i];
  }
}

template <class T>
void blocked_gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                  T alpha, const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c,
                  std::size_t ldc) {
  if (alpha == T(0) || k == 0) return scale_c(m, n, beta, c, ldc);
  constexpr std::size_t mr = SmallTile<T>::mr, nr = SmallTile<T>::nr;
  thread_local PackBuffer<T> b_buffer, a_buffer;
  const std::size_t kc_max = std::min(k, kBlockK);
  T* packed_b = b_buffer.get((std::min(n, kBlockN) + nr - 1) / nr * nr * kc_max);
  T* packed_a = trans_a == Trans::no
                    ? nullptr
                    : a_buffer.get((std::min(m, kBlockM) + mr - 1) / mr * mr * kc_max);
  for (std::size_t k0 = 0; k0 < k; k0 += kBlockK) {
    const std::size_t kc = std::min(kBlockK, k - k0);
    const T beta_k = k0 == 0 ? beta : T(1);
    for (std::size_t j0 = 0; j0 < n; j0 += kBlockN) {
      const std::size_t nc = std::min(kBlockN, n - j0);
      pack_b(trans_b, nc, kc, trans_b == Trans::no ? b + k0 * ldb + j0 : b + j0 * ldb + k0, ldb,
             packed_b);
      for (std::size_t i0 = 0; i0 < m; i0 += kBlockM) {
        const std::size_t mc = std::min(kBlockM, m - i0);
        T* c_block = c + i0 * ldc + j0;
        if (trans_a == Trans::no) {
          small_gemm_packed<T, ALayout::rows>(mc, nc, kc, alpha, a + i0 * lda + k0, lda, lda,
                                              packed_b, beta_k, c_block, ldc);
        } else {
          pack_a(mc, kc, a + k0 * lda + i0, lda, packed_a);
          small_gemm_packed<T, ALayout::packed>(mc, nc, kc, alpha, packed_a, mr, kc, packed_b,
                                                beta_k, c_block, ldc);
        }
      }
    }
  }
}

template <class T>
void blas_gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
               const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c,
               std::size_t ldc) {
  if (m == 0 || n == 0) return;
  if constexpr (sizeof(T) == 4)
    cblas_sgemm(CblasRowMajor, to_cblas(trans_a), to_cblas(trans_b), static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k), alpha, a, ld(lda), b, ld(ldb), beta, c,
                ld(ldc));
  else
    cblas_dgemm(CblasRowMajor, to_cblas(trans_a), to_cblas(trans_b), static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k), alpha, a, ld(lda), b, ld(ldb), beta, c,
                ld(ldc));
}

// BLAS threads of this process (set_blas_threads); the blocked kernel runs on one.
std::atomic<int> blas_threads{1};

// Which plain products run on the blocked kernel rather than OpenBLAS. Measured with
// bench_linalg (BM_own_gemm vs BM_blas_gemm, one thread, AVX-512 build, OPENBLAS_CORETYPE=Haswell
// as this machine's environment sets it, load ~3.5 on 2 cores), float GFLOP/s own vs OpenBLAS:
// the experts' 1024x256x128 nn 177 vs 80, 256x128x1024 tn 127-143 vs 74-79, the projections'
// 4096x384x128 nn 174 vs 79, the head's 256x4096x128 nt 133-151 vs 69-79, 4096x128x256 tn 123 vs
// 71, squares 512-2048 nn 178-182 vs 84-94, 16 rows 120 vs 64, even 1 row 14 vs 7; double about
// half of each, on both sides. OpenBLAS wins only where n is below half a panel (16 floats, 8
// doubles): the router's 4096x8x128 nn 44 vs 57 and 128x8x4096 tn 15 vs 46, most lanes of a
// tile being padding. Built for x86-64-v3 (6x16 tiles of 32-byte vectors, same machine, load
// ~2.5) the kernel is only level with OpenBLAS's Haswell kernels: 55-97 vs 55-95 on the same
// shapes, ahead on some (4096x384x128 nn 81/55), behind on others (256x4096x128 nt 73/85,
// 1024x128x256 nt 64/76). So: the blocked kernel for n >= NR / 2 where 64-byte vectors are
// compiled in; OpenBLAS below that, on targets without AVX-512, and when BLAS runs on several
// threads (the blocked kernel is single-threaded).
template <class T>
bool use_own(std::size_t n) {
  if constexpr (kVectorBytes < 64) {
    (void)n;
    return false;
  } else {
    return n >= std::size_t(SmallTile<T>::nr / 2) &&
           blas_threads.load(std::memory_order_relaxed) == 1;
  }
}

template <class T>
void host_gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
               const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c,
               std::size_t ldc) {
  if (m == 0 || n == 0) return;
  if (use_own<T>(n))
    blocked_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    blas_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// OpenBLAS 0.3.21 has no batched sgemm: small products run on the small kernel, larger ones as a
// loop of plain gemm calls (blocked kernel or OpenBLAS), where the per-call cost is small next to
// the arithmetic.
template <class T>
void gemm_loop(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
               const T* a, std::size_t lda, std::size_t stride_a, const T* b, std::size_t ldb,
               std::size_t stride_b, T beta, T* c, std::size_t ldc, std::size_t stride_c,
               std::size_t batch) {
  if (m == 0 || n == 0) return;
  if (is_small(m, n, k)) {
    for (std::size_t i = 0; i < batch; ++i)
      small_gemm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb,
                 beta, c + i * stride_c, ldc);
    return;
  }
  for (std::size_t i = 0; i < batch; ++i)
    host_gemm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta,
              c + i * stride_c, ldc);
}

}  // namespace

void gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, float alpha,
          const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta, float* c,
          std::size_t ldc) {
  host_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, double alpha,
          const double* a, std::size_t lda, const double* b, std::size_t ldb, double beta,
          double* c, std::size_t ldc) {
  host_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

namespace detail {

void gemm_own(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
              float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb,
              float beta, float* c, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  blocked_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_own(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
              double alpha, const double* a, std::size_t lda, const double* b, std::size_t ldb,
              double beta, double* c, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  blocked_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_blas(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
               float alpha, const float* a, std::size_t lda, const float* b, std::size_t ldb,
               float beta, float* c, std::size_t ldc) {
  blas_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_blas(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
               double alpha, const double* a, std::size_t lda, const double* b, std::size_t ldb,
               double beta, double* c, std::size_t ldc) {
  blas_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace detail

void gemm_strided_batched(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                          float alpha, const float* a, std::size_t lda, std::size_t stride_a,
                          const float* b, std::size_t ldb, std::size_t stride_b, float beta,
                          float* c, std::size_t ldc, std::size_t stride_c, std::size_t batch) {
  gemm_loop(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
            stride_c, batch);
}

void gemm_strided_batched(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                          double alpha, const double* a, std::size_t lda, std::size_t stride_a,
                          const double* b, std::size_t ldb, std::size_t stride_b, double beta,
                          double* c, std::size_t ldc, std::size_t stride_c, std::size_t batch) {
  gemm_loop(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
            stride_c, batch);
}

void set_blas_threads(int threads) {
  openblas_set_num_threads(std::max(threads, 1));
  blas_threads.store(std::max(threads, 1), std::memory_order_relaxed);
}

}  // namespace daa::kernels
