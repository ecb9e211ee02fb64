// cuBLAS adapter against a float64 CPU reference (issue 13): fp32 GEMM (relative error <= 1e-5),
// bf16 GEMM with fp32 accumulation (<= 1e-2 against the exact product, <= 1e-5 against the
// product of the rounded operands), and the experts' grouped GEMM; random inputs, every output
// poisoned with NaN before the call that writes it. Skips (exit 77) without a CUDA device.
#include "cuda_test.hpp"
#include "daa/cuda/gemm.hpp"

#include <cstdio>
#include <string>
#include <vector>

namespace {

using daa::cuda::Blas;
using daa::cuda::Trans;
using namespace daa::cuda::test;

struct Shape {
  std::size_t m, n, k;
};

std::string describe(const char* what, Shape s, bool ta, bool tb, double error) {
  char text[160];
  std::snprintf(text, sizeof(text), "%s m=%zu n=%zu k=%zu trans_a=%d trans_b=%d rel_err=%.3g", what,
                s.m, s.n, s.k, int(ta), int(tb), error);
  return text;
}

std::vector<std::uint16_t> to_bits(const std::vector<float>& x) {
  std::vector<std::uint16_t> bits(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) bits[i] = bf16_bits(x[i]);
  return bits;
}
std::vector<float> rounded(const std::vector<float>& x) {
  std::vector<float> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = bf16_value(bf16_bits(x[i]));
  return r;
}
const __nv_bfloat16* bf16(const DeviceBuffer<std::uint16_t>& b) {
  return reinterpret_cast<const __nv_bfloat16*>(b.get());
}
float bf16_to_float(std::uint16_t b) {
  return bf16_value(b);
}

void dense(Checks& checks, Blas& blas) {
  const Shape shapes[] = {{1, 1, 1}, {37, 53, 71}, {128, 96, 200}, {257, 130, 65}};
  std::uint32_t seed = 1;
  for (const Shape s : shapes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        // Padded leading dimensions, so a wrong stride cannot pass.
        const std::size_t a_rows = ta ? s.k : s.m, a_cols = ta ? s.m : s.k;
        const std::size_t b_rows = tb ? s.n : s.k, b_cols = tb ? s.k : s.n;
        const std::size_t lda = a_cols + 3, ldb = b_cols + 5, ldc = s.n + 2;
        const auto a = random_floats(a_rows * lda, seed++);
        const auto b = random_floats(b_rows * ldb, seed++);
        std::vector<double> ref(s.m * ldc, 0.0);
        reference_gemm(ta, tb, s.m, s.n, s.k, 1.0, a, lda, b, ldb, 0.0, ref, ldc);
        const Trans trans_a = ta ? Trans::yes : Trans::no, trans_b = tb ? Trans::yes : Trans::no;

        DeviceBuffer<float> da(a.size()), db(b.size()), dc(s.m * ldc);
        da.upload(a);
        db.upload(b);
        dc.poison();
        blas.gemm(trans_a, trans_b, s.m, s.n, s.k, 1.0f, da.get(), lda, db.get(), ldb, 0.0f,
                  dc.get(), ldc);
        double error = relative_error(dc.download(), ref, s.m, s.n, ldc);
        checks.expect(error <= 1e-5, describe("fp32 gemm", s, ta, tb, error));

        // bf16 operands: against the exact product and against the rounded operands' product.
        DeviceBuffer<std::uint16_t> ha(a.size()), hb(b.size());
        ha.upload(to_bits(a));
        hb.upload(to_bits(b));
        dc.poison();
        blas.gemm(trans_a, trans_b, s.m, s.n, s.k, 1.0f, bf16(ha), lda, bf16(hb), ldb, 0.0f,
                  dc.get(), ldc);
        const auto c16 = dc.download();
        error = relative_error(c16, ref, s.m, s.n, ldc);
        checks.expect(error <= 1e-2, describe("bf16 gemm vs exact", s, ta, tb, error));
        std::vector<double> ref_rounded(s.m * ldc, 0.0);
        reference_gemm(ta, tb, s.m, s.n, s.k, 1.0, rounded(a), lda, rounded(b), ldb, 0.0,
                       ref_rounded, ldc);
        error = relative_error(c16, ref_rounded, s.m, s.n, ldc);
        checks.expect(error <= 1e-5, describe("bf16 gemm vs rounded operands", s, ta, tb, error));
      }

  // alpha and beta: C is read, so it holds random values instead of NaN.
  const Shape s{45, 29, 33};
  const auto a = random_floats(s.m * s.k, 100), b = random_floats(s.k * s.n, 101);
  const auto c0 = random_floats(s.m * s.n, 102);
  std::vector<double> ref(c0.begin(), c0.end());
  reference_gemm(false, false, s.m, s.n, s.k, 0.75, a, s.k, b, s.n, -0.5, ref, s.n);
  DeviceBuffer<float> da(a.size()), db(b.size()), dc(c0.size());
  da.upload(a);
  db.upload(b);
  dc.upload(c0);
  blas.gemm(Trans::no, Trans::no, s.m, s.n, s.k, 0.75f, da.get(), s.k, db.get(), s.n, -0.5f,
            dc.get(), s.n);
  const double error = relative_error(dc.download(), ref, s.m, s.n, s.n);
  checks.expect(error <= 1e-5, describe("fp32 gemm alpha=0.75 beta=-0.5", s, false, false, error));
}

void grouped(Checks& checks, Blas& blas) {
  // Uneven expert loads, one expert without tokens.
  const std::vector<int> rows = {7, 0, 33, 1, 20};
  const std::size_t n = 48, k = 40, experts = rows.size();
  std::size_t total = 0;
  for (int r : rows) total += static_cast<std::size_t>(r);
  for (int tb = 0; tb < 2; ++tb) {
    const auto a = random_floats(total * k, 200 + tb);
    const std::size_t stride_b = k * n + 16;  // padded between experts
    const auto b = random_floats(experts * stride_b, 300 + tb);
    std::vector<double> ref(total * n, 0.0);
    std::size_t row = 0;
    for (std::size_t e = 0; e < experts; ++e) {
      const std::size_t m = static_cast<std::size_t>(rows[e]);
      std::vector<float> a_e(a.begin() + row * k, a.begin() + (row + m) * k);
      std::vector<float> b_e(b.begin() + e * stride_b, b.begin() + e * stride_b + k * n);
      std::vector<double> c_e(m * n, 0.0);
      reference_gemm(false, tb, m, n, k, 1.0, a_e, k, b_e, tb ? k : n, 0.0, c_e, n);
      std::copy(c_e.begin(), c_e.end(), ref.begin() + row * n);
      row += m;
    }
    const Trans trans_b = tb ? Trans::yes : Trans::no;
    const Shape s{total, n, k};
    DeviceBuffer<float> da(a.size()), db(b.size()), dc(total * n);
    da.upload(a);
    db.upload(b);
    dc.poison();
    blas.expert_gemm(trans_b, rows, n, k, 1.0f, da.get(), db.get(), stride_b, 0.0f, dc.get());
    double error = relative_error(dc.download(), ref, total, n, n);
    checks.expect(error <= 1e-5, describe("fp32 expert_gemm (5 experts)", s, false, tb, error));

    DeviceBuffer<std::uint16_t> ha(a.size()), hb(b.size()), hc(total * n);
    ha.upload(to_bits(a));
    hb.upload(to_bits(b));
    hc.poison();
    blas.expert_gemm(trans_b, rows, n, k, 1.0f, bf16(ha), bf16(hb), stride_b, 0.0f,
                     reinterpret_cast<__nv_bfloat16*>(hc.get()));
    error = relative_error(hc.download(), ref, total, n, n, bf16_to_float);
    checks.expect(error <= 1e-2, describe("bf16 expert_gemm (5 experts)", s, false, tb, error));
  }
}

}  // namespace

int main() {
  device_count_or_skip();
  Checks checks;
  try {
    Blas blas;
    dense(checks, blas);
    grouped(checks, blas);
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
  return checks.exit_code();
}
