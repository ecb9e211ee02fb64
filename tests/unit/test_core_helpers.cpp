// The shared helpers of core/: trim, FNV-1a 64 (strings and byte spans) and its hex form, the
// parameter-name hash built on it (whose values parameter init depends on), and seconds_since.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "daa/core/clock.hpp"
#include "daa/core/rng.hpp"
#include "daa/core/text.hpp"

namespace {

using daa::core::fnv1a64;
using daa::core::hex64;
using daa::core::trim;

TEST(Trim, DropsAsciiWhitespaceAtBothEndsOnly) {
  EXPECT_EQ(trim("  a b \t"), "a b");
  EXPECT_EQ(trim("\r\n\f\vx\r\n"), "x");
  EXPECT_EQ(trim("x"), "x");
  EXPECT_EQ(trim(""), "");
  EXPECT_EQ(trim(" \t\r\n "), "");
  EXPECT_EQ(trim("a\tb"), "a\tb");
  // A view into the argument, not a copy.
  const std::string text = "  key = value ";
  const std::string_view t = trim(text);
  EXPECT_EQ(t.data(), text.data() + 2);
  EXPECT_EQ(t, "key = value");
}

TEST(Fnv1a64, PublishedTestVectors) {
  // From the FNV reference test suite (Fowler, Noll, Vo), 64-bit FNV-1a.
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

TEST(Fnv1a64, BytesAndStringsAgreeAndFloatsHashByTheirBits) {
  const std::string text = "foobar";
  EXPECT_EQ(fnv1a64(std::as_bytes(std::span(text))), fnv1a64(text));
  // Little-endian float32 bytes of {1.0, -2.5, 0.1}, hashed with Python's FNV-1a loop.
  const std::vector<float> values = {1.0f, -2.5f, 0.1f};
  EXPECT_EQ(fnv1a64(std::as_bytes(std::span(values))), 0x3cf8e613b8128996ULL);
  // -0.0 == 0.0 as numbers, but not as bits: a checksum must tell them apart.
  const float zero[] = {0.0f}, negative_zero[] = {-0.0f};
  EXPECT_NE(fnv1a64(std::as_bytes(std::span(zero))),
            fnv1a64(std::as_bytes(std::span(negative_zero))));
}

TEST(Hex64, SixteenLowercaseDigitsZeroPadded) {
  EXPECT_EQ(hex64(0), "0000000000000000");
  EXPECT_EQ(hex64(0xaf63dc4c8601ec8cULL), "af63dc4c8601ec8c");
  EXPECT_EQ(hex64(0xfULL), "000000000000000f");
  EXPECT_EQ(hex64(~0ULL), "ffffffffffffffff");
}

TEST(NameHash, ValuesAreUnchanged) {
  // Parameter init streams are keyed by these hashes: a change would change every initial
  // weight. Values from name_hash before it moved onto core::fnv1a64.
  static_assert(daa::core::name_hash("") == 0xcbf29ce484222325ULL, "usable at compile time");
  EXPECT_EQ(daa::core::name_hash("input.w"), 0x8108472d5960d0a8ULL);
  EXPECT_EQ(daa::core::name_hash("classifier.b"), 0xb8df84d61291d744ULL);
  EXPECT_EQ(daa::core::name_hash("layer0.router.w"), 0xaf7655598d79080eULL);
  EXPECT_EQ(daa::core::name_hash("layer1.expert3.w1"), 0xee14da056089f618ULL);
  EXPECT_EQ(daa::core::name_hash("embedding"), 0x4a48353ad6107ed2ULL);
}

TEST(SecondsSince, MeasuresElapsedSteadyTime) {
  const auto start = daa::core::Clock::now();
  EXPECT_GE(daa::core::seconds_since(start), 0.0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const double seconds = daa::core::seconds_since(start);
  EXPECT_GE(seconds, 0.020);
  EXPECT_LT(seconds, 5.0);  // seconds, not milliseconds or ticks
}

}  // namespace
