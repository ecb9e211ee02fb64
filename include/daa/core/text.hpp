// Small text and byte helpers used across modules: whitespace trimming, the FNV-1a 64-bit hash
// (parameter init streams, parameter checksums) and its 16-hex-digit form.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace daa::core {

// `text` without leading and trailing ASCII whitespace (space, \t, \r, \n, \f, \v). The result
// views `text`'s characters: keep what it views alive.
std::string_view trim(std::string_view text);

namespace detail {
// The one FNV-1a 64 loop, over chars or std::bytes alike.
template <class Bytes>
constexpr std::uint64_t fnv1a64_over(const Bytes& bytes) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (auto b : bytes) h = (h ^ static_cast<unsigned char>(b)) * 0x100000001b3ULL;
  return h;
}
}  // namespace detail

// FNV-1a 64 of a string's bytes. constexpr so that core::name_hash (rng.hpp) stays usable at
// compile time; its values seed parameter init, so this hash must never change.
constexpr std::uint64_t fnv1a64(std::string_view text) {
  return detail::fnv1a64_over(text);
}

// The same hash over raw bytes, e.g. fnv1a64(std::as_bytes(std::span(values))): equal hashes of
// floating-point data mean bit-identical data (up to collisions).
constexpr std::uint64_t fnv1a64(std::span<const std::byte> bytes) {
  return detail::fnv1a64_over(bytes);
}

// 16 lowercase hex digits, zero-padded: fixed width so that checksums line up and compare as text.
std::string hex64(std::uint64_t value);

}  // namespace daa::core
