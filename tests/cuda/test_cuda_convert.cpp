// fp32 <-> bf16 conversion kernels (issue 13): to_bf16 matches the host's round-to-nearest-even
// bit for bit (random values, ties, NaN, Inf, overflow, subnormals), and bf16 -> fp32 -> bf16 is
// the identity; outputs poisoned before each run. Skips (exit 77) without a CUDA device.
#include "cuda_test.hpp"
#include "daa/cuda/convert.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

using namespace daa::cuda::test;

int main() {
  device_count_or_skip();
  Checks checks;
  try {
    // A count that is no multiple of the block size, plus values that test the rounding's edges.
    std::vector<float> x = random_floats(1'000'003, 7);
    for (auto& v : x) v *= 1000.0f;
    const float special[] = {0.0f,
                             -0.0f,
                             1.0f,
                             1.00390625f /* tie: 1 + 2^-8 */,
                             1.01171875f /* tie, rounds up to even */,
                             std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity(),
                             std::numeric_limits<float>::max() /* overflows to Inf */,
                             std::numeric_limits<float>::denorm_min(),
                             1e-40f};
    for (std::size_t i = 0; i < std::size(special); ++i) x[i] = special[i];
    const std::size_t nan_at = std::size(special);
    x[nan_at] = std::numeric_limits<float>::quiet_NaN();

    DeviceBuffer<float> src(x.size()), back(x.size());
    DeviceBuffer<std::uint16_t> half(x.size());
    src.upload(x);
    half.poison();
    back.poison();
    auto* half_ptr = reinterpret_cast<__nv_bfloat16*>(half.get());
    daa::cuda::to_bf16(src.get(), half_ptr, x.size(), nullptr);
    daa::cuda::to_fp32(half_ptr, back.get(), x.size(), nullptr);
    DAA_CUDA_CHECK(cudaDeviceSynchronize());
    const auto bits = half.download();
    const auto y = back.download();

    std::size_t bit_mismatch = 0, value_mismatch = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (i == nan_at) continue;
      if (bits[i] != bf16_bits(x[i])) ++bit_mismatch;
      if (bf16_value(bits[i]) != y[i] && !(std::isnan(y[i]))) ++value_mismatch;
    }
    checks.expect(bit_mismatch == 0, "to_bf16 equals the host's round-to-nearest-even on " +
                                         std::to_string(x.size() - 1) + " values, " +
                                         std::to_string(bit_mismatch) + " differ");
    checks.expect(std::isnan(bf16_value(bits[nan_at])) && std::isnan(y[nan_at]),
                  "NaN stays NaN through both conversions");
    checks.expect(value_mismatch == 0,
                  "to_fp32 is exact, " + std::to_string(value_mismatch) + " values differ");
    checks.expect(std::isinf(y[7]) && y[7] > 0, "FLT_MAX rounds to +Inf");

    // bf16 -> fp32 -> bf16 is the identity on every finite bf16 bit pattern.
    std::vector<std::uint16_t> all;
    for (std::uint32_t b = 0; b < 65536; ++b)
      if (std::isfinite(bf16_value(static_cast<std::uint16_t>(b))))
        all.push_back(static_cast<std::uint16_t>(b));
    DeviceBuffer<std::uint16_t> patterns(all.size()), again(all.size());
    DeviceBuffer<float> widened(all.size());
    patterns.upload(all);
    widened.poison();
    again.poison();
    daa::cuda::to_fp32(reinterpret_cast<const __nv_bfloat16*>(patterns.get()), widened.get(),
                       all.size(), nullptr);
    daa::cuda::to_bf16(widened.get(), reinterpret_cast<__nv_bfloat16*>(again.get()), all.size(),
                       nullptr);
    DAA_CUDA_CHECK(cudaDeviceSynchronize());
    checks.expect(again.download() == all, "bf16 -> fp32 -> bf16 round trip on " +
                                               std::to_string(all.size()) + " finite patterns");
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
  return checks.exit_code();
}
