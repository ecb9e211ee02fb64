// Host back end of the linalg adapter: OpenBLAS cblas, plus a register-blocked kernel of our own.
// The kernel runs the small products of a strided batch (attention's per-sequence blocks), where
// OpenBLAS's fixed cost per call outweighs the arithmetic, and, cache-blocked, the plain products
// (experts, projections, head) where it is about twice as fast as OpenBLAS here: this machine's
// environment pins OpenBLAS to its AVX2 (Haswell) kernels, while ours uses AVX-512 where compiled
// in. OpenBLAS keeps narrow products (n under half a panel: the router's), targets without
// AVX-512, and multi-threaded BLAS; see use_own. Mixed precision's bf16 products run on a twin of
// the blocked kernel with AVX512_BF16 dot products (blocked_gemm_bf16). The CUDA build adds the
// per-stream cuBLAS adapters behind the execution-space overloads (at the end of this file).
#include "daa/kernels/linalg.hpp"

#include "daa/core/error.hpp"

#include <cblas.h>

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#if defined(DAA_HAVE_CUDA_ADAPTERS)
#include <map>
#include <mutex>

#include "daa/cuda/check.hpp"
#endif

namespace daa::kernels {
namespace {

CBLAS_TRANSPOSE to_cblas(Trans t) {
  return t == Trans::no ? CblasNoTrans : CblasTrans;
}

constexpr const char* kNoBf16 =
    "kernels: bf16 products need a CPU with AVX512_BF16 and a build for it (-march=native on "
    "such a CPU, DAA_NATIVE_ARCH=ON) or the CUDA build; this build has neither";

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
#if defined(__NVCC__)
  // nvcc re-emits the pack expansion below unexpanded for the host compiler; the same lanes by
  // subscript (the same bits, only slower) serve the CUDA build, whose hot GEMMs are cuBLAS.
  V lo{}, hi{};
  for (std::size_t i = 0; i < n; ++i) {
    lo[i] = i % 2 ? b[i / 2] : a[i / 2];
    hi[i] = i % 2 ? b[n / 2 + i / 2] : a[n / 2 + i / 2];
  }
  low = lo;
  high = hi;
#else
  low = __builtin_shufflevector(a, b, (I % 2 ? n + I / 2 : I / 2)...);
  high = __builtin_shufflevector(a, b, (I % 2 ? n + n / 2 + I / 2 : n / 2 + I / 2)...);
#endif
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

// bf16 products (mixed precision). Both operands are rounded to bfloat16 (round to nearest even)
// while they are packed, and the tiles multiply pairs of them with AVX512_BF16's vdpbf16ps, which
// adds two products at a time into fp32 accumulators: twice the multiply-adds per instruction of
// the fp32 tiles, on the same tile shape and cache blocks. Packed operands are 32-bit words, each
// a pair (k even, k odd) of bf16 values of one row of op(A) or one column of op(B); an odd k is
// padded with a zero. No vector-extension form of the instruction exists, so this part uses
// intrinsics and is compiled only where the target has them (-march=native on such a CPU).
#if defined(__AVX512BF16__)
#define DAA_HAVE_BF16_GEMM 1
constexpr std::size_t kBf16Mr = 8, kBf16Nr = 32;
// The word panels and tiles are built from pack_b's and pack_a's fp32 layouts, and the assembly
// tile is fixed at 8 x 32: all three must agree.
static_assert(kBf16Mr == SmallTile<float>::mr && kBf16Nr == SmallTile<float>::nr);

// Words (k pairs) that kc steps of k take.
std::size_t pairs_of(std::size_t kc) {
  return (kc + 1) / 2;
}

// Rounds 16 floats of row `lo` and 16 of row `hi` to bf16 and interleaves them: word j holds
// (lo[j], hi[j]).
[[gnu::always_inline]] inline __m512i pair_rows16(const float* lo, const float* hi) {
  alignas(64) static constexpr std::uint16_t kInterleave[32] = {
      0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512bh both = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(hi), _mm512_loadu_ps(lo));
  return _mm512_permutexvar_epi16(_mm512_load_si512(kInterleave), __m512i(both));
}

// The same for 8 floats of each row: 8 words.
[[gnu::always_inline]] inline __m256i pair_rows8(const float* lo, const float* hi) {
  alignas(32) static constexpr std::uint16_t kInterleave[16] = {0, 8,  1, 9,  2, 10, 3, 11,
                                                                4, 12, 5, 13, 6, 14, 7, 15};
  const __m256bh both = _mm256_cvtne2ps_pbh(_mm256_loadu_ps(hi), _mm256_loadu_ps(lo));
  return _mm256_permutexvar_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(kInterleave)),
                                  __m256i(both));
}

// fp32 rows [kc][width] (pack_b's panels: width 32; pack_a's tiles: width 8) into word rows
// [pairs_of(kc)][width], the row after an odd last one read as zeros.
template <std::size_t Width>
void pair_packed(std::size_t kc, const float* rows, std::uint32_t* words) {
  alignas(64) static constexpr float kZeros[Width] = {};
  for (std::size_t q = 0; q < pairs_of(kc); ++q) {
    const float* lo = rows + 2 * q * Width;
    const float* hi = 2 * q + 1 < kc ? lo + Width : kZeros;
    if constexpr (Width == kBf16Nr) {
      _mm512_storeu_si512(words + q * Width, pair_rows16(lo, hi));
      _mm512_storeu_si512(words + q * Width + 16, pair_rows16(lo + 16, hi + 16));
    } else {
      static_assert(Width == kBf16Mr);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(words + q * Width), pair_rows8(lo, hi));
    }
  }
}

// Rows [mc][kc] of A stored as is into word rows [mc][pairs_of(kc)]: along a stored row
// consecutive k are already a pair, so a row converts as it lies. Rows up to the next multiple of
// MR are zero, so the last tile can run whole.
void convert_rows(std::size_t mc, std::size_t kc, const float* a, std::size_t lda,
                  std::uint32_t* words) {
  const std::size_t kp = pairs_of(kc);
  for (std::size_t i = 0; i < (mc + kBf16Mr - 1) / kBf16Mr * kBf16Mr; ++i) {
    auto* dst = reinterpret_cast<std::uint16_t*>(words + i * kp);
    if (i >= mc) {
      std::fill(dst, dst + 2 * kp, std::uint16_t(0));
      continue;
    }
    const float* src = a + i * lda;
    std::size_t p = 0;
    for (; p + 16 <= kc; p += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + p),
                          __m256i(_mm512_cvtneps_pbh(_mm512_loadu_ps(src + p))));
    if (p < kc) {
      const __mmask16 tail = __mmask16((1u << (kc - p)) - 1);
      _mm256_mask_storeu_epi16(dst + p, tail,
                               __m256i(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(tail, src + p))));
    }
    if (kc % 2) dst[kc] = 0;
  }
}

// Where the MR rows of op(A) lie for the microkernel: row r's pair q at a + r * row_step +
// q * pair_step (bytes). Converted rows: row_step = pairs_of(kc) words, pair_step = one word;
// packed tiles: row_step = one word, pair_step = MR words.
struct Bf16Rows {
  const std::uint32_t* a;
  std::size_t row_step, pair_step;
};

// The 8 x 32 tile over kp pairs: tile = op(A) op(B) for 8 rows of A and one word panel
// ([kp][32]). The accumulators live in zmm0-15 for the whole loop. Assembly rather than the
// intrinsic: GCC 12 spilled accumulators or panel rows to the stack around every vdpbf16ps in
// each form of the intrinsic and of per-instruction inline assembly tried (bf16-typed,
// float-typed, values in and out, pinned registers), at 0.4-0.8x of the fp32 kernel's speed.
// Rows 0-3 are addressed from a0, rows 4-7 from a4 = a0 + 4 row steps, with the row step s and 3s
// in registers.
// clang-format off
#define DAA_BF16_ROW(row, lo, hi, x)                   \
  "vbroadcastss " row ", %%zmm" #x "\n\t"             \
  "vdpbf16ps %%zmm" #x ", %%zmm16, %%zmm" #lo "\n\t"  \
  "vdpbf16ps %%zmm" #x ", %%zmm17, %%zmm" #hi "\n\t"
#define DAA_BF16_STORE(lo, hi)                         \
  "vmovups %%zmm" #lo ", " #lo "*64(%[out])\n\t"      \
  "vmovups %%zmm" #hi ", " #hi "*64(%[out])\n\t"
// clang-format on
void bf16_microkernel(std::size_t kp, Bf16Rows rows, const std::uint32_t* panel, float* out) {
  const auto* a0 = reinterpret_cast<const char*>(rows.a);
  const char* a4 = a0 + 4 * rows.row_step;
  const std::size_t s = rows.row_step, s3 = 3 * rows.row_step;
  __asm__ volatile(
      "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
      "vmovaps %%zmm0, %%zmm1\n\t"
      "vmovaps %%zmm0, %%zmm2\n\t"
      "vmovaps %%zmm0, %%zmm3\n\t"
      "vmovaps %%zmm0, %%zmm4\n\t"
      "vmovaps %%zmm0, %%zmm5\n\t"
      "vmovaps %%zmm0, %%zmm6\n\t"
      "vmovaps %%zmm0, %%zmm7\n\t"
      "vmovaps %%zmm0, %%zmm8\n\t"
      "vmovaps %%zmm0, %%zmm9\n\t"
      "vmovaps %%zmm0, %%zmm10\n\t"
      "vmovaps %%zmm0, %%zmm11\n\t"
      "vmovaps %%zmm0, %%zmm12\n\t"
      "vmovaps %%zmm0, %%zmm13\n\t"
      "vmovaps %%zmm0, %%zmm14\n\t"
      "vmovaps %%zmm0, %%zmm15\n\t"
      "test %[kp], %[kp]\n\t"
      "jz 2f\n\t"
      "1:\n\t"
      "vmovups (%[b]), %%zmm16\n\t"
      "vmovups 64(%[b]), %%zmm17\n\t"
      DAA_BF16_ROW("(%[a0])", 0, 1, 18) DAA_BF16_ROW("(%[a0],%[s])", 2, 3, 19)
      DAA_BF16_ROW("(%[a0],%[s],2)", 4, 5, 20) DAA_BF16_ROW("(%[a0],%[s3])", 6, 7, 21)
      DAA_BF16_ROW("(%[a4])", 8, 9, 22) DAA_BF16_ROW("(%[a4],%[s])", 10, 11, 23)
      DAA_BF16_ROW("(%[a4],%[s],2)", 12, 13, 24) DAA_BF16_ROW("(%[a4],%[s3])", 14, 15, 25)
      "add %[step], %[a0]\n\t"
      "add %[step], %[a4]\n\t"
      "add $128, %[b]\n\t"
      "dec %[kp]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      DAA_BF16_STORE(0, 1) DAA_BF16_STORE(2, 3) DAA_BF16_STORE(4, 5) DAA_BF16_STORE(6, 7)
      DAA_BF16_STORE(8, 9) DAA_BF16_STORE(10, 11) DAA_BF16_STORE(12, 13)
      DAA_BF16_STORE(14, 15)
      : [a0] "+r"(a0), [a4] "+r"(a4), [b] "+r"(panel), [kp] "+r"(kp)
      : [out] "r"(out), [s] "r"(s), [s3] "r"(s3), [step] "r"(rows.pair_step)
      : "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9", "zmm10",
        "zmm11", "zmm12", "zmm13", "zmm14", "zmm15", "zmm16", "zmm17", "zmm18", "zmm19", "zmm20",
        "zmm21", "zmm22", "zmm23", "zmm24", "zmm25", "memory", "cc");
}
#undef DAA_BF16_ROW
#undef DAA_BF16_STORE

// C block rows [0, mc) x columns [0, nc) from op(A)'s words (converted rows or packed tiles)
// and word panels: each 8 x 32 tile through the microkernel, then C = alpha * tile + beta * C on
// the rows and columns that exist (beta == 0 does not read C, as in the fp32 tiles).
void bf16_block(std::size_t mc, std::size_t nc, std::size_t kp, float alpha, const std::uint32_t* a,
                bool packed_a, const std::uint32_t* panels, float beta, float* c, std::size_t ldc) {
  alignas(64) float tile[kBf16Mr * kBf16Nr];
  const __m512 valpha = _mm512_set1_ps(alpha), vbeta = _mm512_set1_ps(beta);
  constexpr std::size_t word = sizeof(std::uint32_t);
  for (std::size_t j0 = 0; j0 < nc; j0 += kBf16Nr) {
    const std::size_t cols = std::min(kBf16Nr, nc - j0);
    for (std::size_t i0 = 0; i0 < mc; i0 += kBf16Mr) {
      // Both layouts keep a tile's words at i0 * kp from the start.
      const Bf16Rows rows = packed_a ? Bf16Rows{a + i0 * kp, word, kBf16Mr * word}
                                     : Bf16Rows{a + i0 * kp, kp * word, word};
      bf16_microkernel(kp, rows, panels + j0 * kp, tile);
      for (std::size_t i = 0; i < std::min(kBf16Mr, mc - i0); ++i) {
        float* out = c + (i0 + i) * ldc + j0;
        for (std::size_t j = 0; j < cols; j += 16) {
          const __mmask16 mask =
              cols - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (cols - j)) - 1);
          __m512 r = _mm512_mul_ps(valpha, _mm512_load_ps(tile + i * kBf16Nr + j));
          if (beta != 0.0f) r = _mm512_fmadd_ps(vbeta, _mm512_maskz_loadu_ps(mask, out + j), r);
          _mm512_mask_storeu_ps(out + j, mask, r);
        }
      }
    }
  }
}

// The blocked loop of blocked_gemm with bf16 packing: op(B) goes through pack_b (fp32 panels)
// and then into word panels; op(A) into word tiles, from rows as stored or, when A is stored
// transposed, through pack_a.
void blocked_gemm_bf16(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                       float alpha, const float* a, std::size_t lda, const float* b,
                       std::size_t ldb, float beta, float* c, std::size_t ldc) {
  if (alpha == 0.0f || k == 0) return scale_c(m, n, beta, c, ldc);
  constexpr std::size_t mr = kBf16Mr, nr = kBf16Nr;
  thread_local PackBuffer<float> b_floats, a_floats;
  thread_local PackBuffer<std::uint32_t> b_words, a_words;
  const std::size_t kc_max = std::min(k, kBlockK);
  const std::size_t n_padded = (std::min(n, kBlockN) + nr - 1) / nr * nr;
  const std::size_t m_padded = (std::min(m, kBlockM) + mr - 1) / mr * mr;
  float* packed_b = b_floats.get(n_padded * kc_max);
  std::uint32_t* panels = b_words.get(n_padded * pairs_of(kc_max));
  float* packed_a = trans_a == Trans::no ? nullptr : a_floats.get(m_padded * kc_max);
  std::uint32_t* a_block = a_words.get(m_padded * pairs_of(kc_max));
  for (std::size_t k0 = 0; k0 < k; k0 += kBlockK) {
    const std::size_t kc = std::min(kBlockK, k - k0), kp = pairs_of(kc);
    const float beta_k = k0 == 0 ? beta : 1.0f;
    for (std::size_t j0 = 0; j0 < n; j0 += kBlockN) {
      const std::size_t nc = std::min(kBlockN, n - j0);
      pack_b(trans_b, nc, kc, trans_b == Trans::no ? b + k0 * ldb + j0 : b + j0 * ldb + k0, ldb,
             packed_b);
      for (std::size_t j = 0; j < nc; j += nr)
        pair_packed<nr>(kc, packed_b + j * kc, panels + j * kp);
      for (std::size_t i0 = 0; i0 < m; i0 += kBlockM) {
        const std::size_t mc = std::min(kBlockM, m - i0);
        float* c_block = c + i0 * ldc + j0;
        if (trans_a == Trans::no) {
          convert_rows(mc, kc, a + i0 * lda + k0, lda, a_block);
        } else {
          pack_a(mc, kc, a + k0 * lda + i0, lda, packed_a);
          for (std::size_t t = 0; t < mc; t += mr)
            pair_packed<mr>(kc, packed_a + t * kc, a_block + t * kp);
        }
        bf16_block(mc, nc, kp, alpha, a_block, trans_a == Trans::yes, panels, beta_k, c_block, ldc);
      }
    }
  }
}
#endif

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

// The precision of float products that do not name one (set_default_precision).
std::atomic<Precision> default_gemm_precision{Precision::fp32};

template <class T>
void host_gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
               const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c,
               std::size_t ldc, Precision precision = Precision::fp32) {
  if (m == 0 || n == 0) return;
  if (precision == Precision::bf16) {
    if constexpr (sizeof(T) == 4) {
#if defined(DAA_HAVE_BF16_GEMM)
      return blocked_gemm_bf16(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
      throw Error(kNoBf16);
#endif
    }
  }
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
          std::size_t ldc, Precision precision) {
  host_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, precision);
}

bool bf16_available() {
#if defined(DAA_HAVE_BF16_GEMM)
  return true;
#else
  return false;
#endif
}

void set_default_precision(Precision precision) {
  if (precision == Precision::bf16 && !bf16_available()) throw Error(kNoBf16);
  default_gemm_precision.store(precision, std::memory_order_relaxed);
}

Precision default_precision() {
  return default_gemm_precision.load(std::memory_order_relaxed);
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

#if defined(DAA_HAVE_CUDA_ADAPTERS)
namespace detail {

cuda::Blas& cuda_blas(cudaStream_t stream) {
  // Never erased: a stream's handle lives as long as the process (streams are few and long-lived).
  static std::mutex mutex;
  static std::map<cudaStream_t, std::unique_ptr<cuda::Blas>> blas;
  const std::lock_guard lock(mutex);
  auto& slot = blas[stream];
  if (!slot) slot = std::make_unique<cuda::Blas>(stream);
  return *slot;
}

CudaBf16Copy::CudaBf16Copy(const float* src, std::size_t count, cudaStream_t stream)
    : stream_(stream) {
  if (count == 0) return;
  void* data = nullptr;
  DAA_CUDA_CHECK(cudaMallocAsync(&data, count * sizeof(__nv_bfloat16), stream));
  data_ = static_cast<__nv_bfloat16*>(data);
  cuda::to_bf16(src, data_, count, stream);
}

CudaBf16Copy::~CudaBf16Copy() {
  // No throw from a destructor; the free is queued after the GEMM that reads the copy.
  if (data_ != nullptr) cudaFreeAsync(data_, stream_);
}

}  // namespace detail
#endif

}  // namespace daa::kernels
