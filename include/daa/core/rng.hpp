// Counter-based random numbers (DESIGN.md §5): every draw is a pure function of
// (seed, purpose, stream, index), so values do not depend on the rank layout or on a restart.
#pragma once

#include <cmath>
#include <cstdint>

#include "daa/core/text.hpp"

namespace daa::core {

// Separate key spaces so that, e.g., the data shuffle and weight init never share draws.
enum class RngPurpose : std::uint64_t {
  shuffle = 1,
  init = 2,
  test = 3,
  attack = 4,        // simulated Byzantine behaviour (noise, bit flips)
  text_windows = 5,  // where each language-model training window starts (io/token_batches.hpp)
  sample = 6,        // the token drawn at each position of generated text (model/generation.hpp)
};

// SplitMix64 finalizer: a bijective 64-bit mixer with full avalanche.
constexpr std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Key chaining keeps distinct (seed, purpose, stream) triples on distinct sequences.
constexpr std::uint64_t counter_bits(std::uint64_t seed, RngPurpose purpose, std::uint64_t stream,
                                     std::uint64_t index) {
  std::uint64_t key = mix64(seed ^ mix64(static_cast<std::uint64_t>(purpose)));
  key = mix64(key ^ mix64(stream + 0x632be59bd9b4e019ULL));
  return mix64(key ^ mix64(index));
}

// Uniform in [0, 1) with 53 random bits.
constexpr double counter_uniform(std::uint64_t seed, RngPurpose purpose, std::uint64_t stream,
                                 std::uint64_t index) {
  return static_cast<double>(counter_bits(seed, purpose, stream, index) >> 11) * 0x1.0p-53;
}

// Standard normal by Box-Muller from the two draws 2*index and 2*index+1.
inline double counter_normal(std::uint64_t seed, RngPurpose purpose, std::uint64_t stream,
                             std::uint64_t index) {
  const double u1 = 1.0 - counter_uniform(seed, purpose, stream, 2 * index);  // (0, 1]
  const double u2 = counter_uniform(seed, purpose, stream, 2 * index + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Stable 64-bit hash of a name (FNV-1a), used to give each parameter its own init stream.
constexpr std::uint64_t name_hash(const char* s) {
  return fnv1a64(std::string_view(s));
}

}  // namespace daa::core
