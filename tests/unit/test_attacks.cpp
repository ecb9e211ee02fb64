// The simulated Byzantine attacks as a host library: hand-derived outputs of every attack on a
// small vector, little-is-enough's z against high-precision values (mpmath, pasted below), the
// statistics and determinism of the random attacks, and the parameter and input checks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/robust/attacks.hpp"

namespace {

using daa::robust::apply_attack;
using daa::robust::Attack;
using daa::robust::AttackParams;
using daa::robust::check_attack_params;
using daa::robust::flip_label;
using daa::robust::HonestView;
using daa::robust::little_is_enough_z;
using daa::robust::parse_attack;
using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;

const Attack kAllAttacks[] = {
    Attack::none,     Attack::sign_flip,  Attack::inner_product, Attack::little_is_enough,
    Attack::gaussian, Attack::label_flip, Attack::bit_flip,      Attack::nan,
    Attack::inf,      Attack::mimic};

// A small round: this rank's g, the honest moments and one honest copy (d = 4).
const std::vector<float> kG = {1.0f, -2.0f, 0.5f, 4.0f};
const std::vector<float> kMean = {0.5f, -1.0f, 2.0f, 0.0f};
const std::vector<float> kStd = {1.0f, 2.0f, 0.5f, 4.0f};
const std::vector<float> kCopy = {3.0f, 1.5f, -0.25f, 7.0f};
const HonestView kView{kMean, kStd, kCopy};

std::vector<float> attacked(Attack attack, const AttackParams& p, std::vector<float> g = kG,
                            const HonestView& view = kView, int n = 8, int f = 2,
                            std::uint64_t round = 0, int rank = 0) {
  apply_attack(attack, p, g, view, n, f, round, rank);
  return g;
}

std::vector<std::uint32_t> bits_of(const std::vector<float>& v) {
  std::vector<std::uint32_t> out;
  for (float x : v) out.push_back(std::bit_cast<std::uint32_t>(x));
  return out;
}

// Distinct, ordinary values so that any flipped bit shows.
std::vector<float> ramp(size_t d) {
  std::vector<float> v(d);
  for (size_t i = 0; i < d; ++i) v[i] = 1.0f + 1e-3f * static_cast<float>(i);
  return v;
}

std::string params_message(Attack attack, const AttackParams& p) {
  try {
    check_attack_params(attack, p);
  } catch (const daa::ConfigError& e) {
    return e.what();
  }
  return "";
}

// ---------------------------------------------------------------- outputs on a small vector

TEST(AttacksOutput, NoneAndLabelFlipLeaveTheContribution) {
  EXPECT_EQ(attacked(Attack::none, {}), kG);
  // label_flip poisons through the labels (flip_label), not here.
  EXPECT_EQ(attacked(Attack::label_flip, {}), kG);
}

TEST(AttacksOutput, SignFlip) {
  EXPECT_THAT(attacked(Attack::sign_flip, {}), ElementsAre(-1.0f, 2.0f, -0.5f, -4.0f));
  AttackParams p;
  p.sign_flip_scale = 2.5;  // -2.5 * (1, -2, 0.5, 4)
  EXPECT_THAT(attacked(Attack::sign_flip, p), ElementsAre(-2.5f, 5.0f, -1.25f, -10.0f));
}

TEST(AttacksOutput, InnerProductIsMinusEpsilonTimesTheHonestMean) {
  // Default epsilon 10: -10 * (0.5, -1, 2, 0); g plays no part.
  EXPECT_THAT(attacked(Attack::inner_product, {}), ElementsAre(-5.0f, 10.0f, -20.0f, 0.0f));
  AttackParams p;
  p.epsilon = 0.5;
  EXPECT_THAT(attacked(Attack::inner_product, p), ElementsAre(-0.25f, 0.5f, -1.0f, 0.0f));
}

TEST(AttacksOutput, LittleIsEnough) {
  AttackParams p;
  p.z = 1.5;  // mu - 1.5 sigma = (0.5 - 1.5, -1 - 3, 2 - 0.75, 0 - 6)
  EXPECT_THAT(attacked(Attack::little_is_enough, p), ElementsAre(-1.0f, -4.0f, 1.25f, -6.0f));
  // z = 0: from n = 8, f = 2, z = Phi^{-1}(5/8) = 0.31863936396437516, so
  // mu - z sigma = (0.5 - z, -1 - 2z, 2 - z/2, -4z).
  EXPECT_THAT(
      attacked(Attack::little_is_enough, {}, kG, kView, 8, 2),
      Pointwise(FloatNear(1e-6f), std::vector<float>{0.18136063603562484f, -1.6372787279287503f,
                                                     1.8406803180178124f, -1.2745574558575007f}));
  // n = 4, f = 1: z = Phi^{-1}(1/2) = 0, the attacker sends the mean itself.
  EXPECT_EQ(attacked(Attack::little_is_enough, {}, kG, kView, 4, 1), kMean);
}

TEST(AttacksOutput, GaussianIgnoresTheContribution) {
  const std::vector<float> a = attacked(Attack::gaussian, {});
  const std::vector<float> b = attacked(Attack::gaussian, {}, {9.0f, 9.0f, 9.0f, 9.0f});
  EXPECT_EQ(bits_of(a), bits_of(b));
  EXPECT_NE(a, kG);
  AttackParams zero;
  zero.sigma = 0.0;
  EXPECT_THAT(attacked(Attack::gaussian, zero), ElementsAre(0.0f, 0.0f, 0.0f, 0.0f));
}

TEST(AttacksOutput, NanAndInf) {
  for (float x : attacked(Attack::nan, {})) EXPECT_TRUE(std::isnan(x));
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_THAT(attacked(Attack::inf, {}), ElementsAre(inf, inf, inf, inf));
}

TEST(AttacksOutput, MimicCopiesTheHonestContribution) {
  EXPECT_EQ(attacked(Attack::mimic, {}), kCopy);
}

TEST(AttacksOutput, FlipLabel) {
  EXPECT_EQ(flip_label(0, 10), 9);
  EXPECT_EQ(flip_label(9, 10), 0);
  EXPECT_EQ(flip_label(3, 10), 6);
  EXPECT_EQ(flip_label(0, 1), 0);
  EXPECT_THROW(flip_label(10, 10), daa::Error);
  EXPECT_THROW(flip_label(-1, 10), daa::Error);
}

TEST(AttacksOutput, WhichAttacksNeedTheHonestView) {
  for (Attack a : kAllAttacks) {
    EXPECT_EQ(daa::robust::needs_honest_moments(a),
              a == Attack::inner_product || a == Attack::little_is_enough)
        << to_string(a);
    EXPECT_EQ(daa::robust::needs_honest_copy(a), a == Attack::mimic) << to_string(a);
  }
}

// ---------------------------------------------------------------- little-is-enough's z

TEST(AttacksLittleIsEnoughZ, KnownValues) {
  // n = 8, f = 2: s = floor(4 + 1) - 2 = 3, z = Phi^{-1}(5/8).
  EXPECT_NEAR(little_is_enough_z(8, 2), 0.31863936396437516, 1e-12);
  // The paper's setting n = 50, f = 24: s = 26 - 24 = 2, z = Phi^{-1}(48/50).
  EXPECT_NEAR(little_is_enough_z(50, 24), 1.7506860712521700, 1e-12);
  // n = 4, f = 1: s = 2, z = Phi^{-1}(1/2) = 0 exactly.
  EXPECT_EQ(little_is_enough_z(4, 1), 0.0);
  // n = 100, f = 40: s = 11, z = Phi^{-1}(0.89) (central region of the approximation).
  EXPECT_NEAR(little_is_enough_z(100, 40), 1.2265281200366101, 1e-12);
  // Upper tail region (p > 0.97575): n = 200, f = 99: s = 2, p = 0.99; n = 1000, f = 499: p =
  // 0.998.
  EXPECT_NEAR(little_is_enough_z(200, 99), 2.3263478740408411, 1e-12);
  EXPECT_NEAR(little_is_enough_z(1000, 499), 2.8781617390954834, 1e-12);
}

TEST(AttacksLittleIsEnoughZ, EdgeCasesClampToAFiniteNonNegativeZ) {
  // f = 0: s = floor(n/2 + 1) > n/2, so p < 1/2 and z would be negative; clamped to 0.
  EXPECT_EQ(little_is_enough_z(8, 0), 0.0);
  EXPECT_EQ(little_is_enough_z(1, 0), 0.0);  // s = 1, p = 0
  // Byzantine majority n = 4, f = 3: s = 3 - 3 = 0 would give z = +inf; s is kept at 1, so
  // z = Phi^{-1}(3/4).
  EXPECT_NEAR(little_is_enough_z(4, 3), 0.67448975019608174, 1e-12);
}

TEST(AttacksLittleIsEnoughZ, BadNOrFNamesBoth) {
  for (auto [n, f] : {std::pair{0, 0}, std::pair{4, 4}, std::pair{4, -1}, std::pair{-3, 0}}) {
    try {
      little_is_enough_z(n, f);
      FAIL() << "n = " << n << ", f = " << f << " accepted";
    } catch (const daa::ConfigError& e) {
      EXPECT_THAT(e.what(), HasSubstr("n = " + std::to_string(n) + ", f = " + std::to_string(f)));
    }
  }
}

// ---------------------------------------------------------------- bit flips

TEST(AttacksBitFlip, RateZeroChangesNothing) {
  AttackParams p;
  p.bitflip_rate = 0.0;
  const std::vector<float> g = ramp(10000);
  EXPECT_EQ(bits_of(attacked(Attack::bit_flip, p, g)), bits_of(g));
}

TEST(AttacksBitFlip, RateOneFlipsExactlyOneBitOfEveryValue) {
  AttackParams p;
  p.bitflip_rate = 1.0;
  const std::vector<float> g = ramp(10000);
  const std::vector<std::uint32_t> before = bits_of(g);
  const std::vector<std::uint32_t> after = bits_of(attacked(Attack::bit_flip, p, g));
  std::vector<int> per_bit(32, 0);
  for (size_t i = 0; i < g.size(); ++i) {
    const std::uint32_t x = before[i] ^ after[i];
    ASSERT_EQ(std::popcount(x), 1) << "value " << i;
    ++per_bit[std::countr_zero(x)];
  }
  // Uniform bit choice: 10000 / 32 = 312.5 per bit, binomial sd about 17.4; 5 sd = 87.
  for (int b = 0; b < 32; ++b) EXPECT_NEAR(per_bit[b], 312.5, 87.0) << "bit " << b;
}

TEST(AttacksBitFlip, RateOnePercentFlipsAboutOnePercent) {
  AttackParams p;
  p.bitflip_rate = 0.01;
  const std::vector<float> g = ramp(100000);
  const std::vector<std::uint32_t> before = bits_of(g);
  const std::vector<std::uint32_t> after = bits_of(attacked(Attack::bit_flip, p, g));
  int flipped = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (before[i] == after[i]) continue;
    ++flipped;
    EXPECT_EQ(std::popcount(before[i] ^ after[i]), 1) << "value " << i;
  }
  // Binomial(100000, 0.01): mean 1000, sd sqrt(100000 * 0.01 * 0.99) = 31.46; 5 sd = 157.
  EXPECT_NEAR(flipped, 1000, 157);
}

TEST(AttacksBitFlip, DeterministicPerRoundAndRank) {
  AttackParams p;
  p.bitflip_rate = 0.5;
  const std::vector<float> g = ramp(4096);
  auto run = [&](std::uint64_t round, int rank, std::uint64_t seed = 0) {
    AttackParams q = p;
    q.seed = seed;
    return bits_of(attacked(Attack::bit_flip, q, g, {}, 8, 2, round, rank));
  };
  EXPECT_EQ(run(7, 3), run(7, 3));
  EXPECT_NE(run(7, 3), run(8, 3));
  EXPECT_NE(run(7, 3), run(7, 4));
  EXPECT_NE(run(0, 1), run(1, 0));  // stream (round << 20) + rank keeps them apart
  EXPECT_NE(run(7, 3), run(7, 3, 1));
  // Keyed by coordinate: a shorter contribution gets the prefix of the longer one's result.
  const std::vector<float> head(g.begin(), g.begin() + 100);
  const std::vector<std::uint32_t> full = run(7, 3);
  EXPECT_EQ(bits_of(attacked(Attack::bit_flip, p, head, {}, 8, 2, 7, 3)),
            std::vector<std::uint32_t>(full.begin(), full.begin() + 100));
}

// ---------------------------------------------------------------- gaussian noise

TEST(AttacksGaussian, SampleMomentsMatchSigma) {
  AttackParams p;
  p.sigma = 10.0;
  const std::vector<float> v = attacked(Attack::gaussian, p, std::vector<float>(100000, 1.0f));
  double sum = 0.0, sq = 0.0;
  for (float x : v) {
    sum += x;
    sq += static_cast<double>(x) * x;
  }
  const double count = static_cast<double>(v.size());
  const double mean = sum / count;
  const double sd = std::sqrt(sq / count - mean * mean);
  // Standard errors: sigma / sqrt(N) = 0.0316 for the mean, sigma / sqrt(2N) = 0.0224 for the sd.
  EXPECT_NEAR(mean, 0.0, 0.16);
  EXPECT_NEAR(sd, 10.0, 0.12);
}

TEST(AttacksGaussian, DeterministicPerRoundAndRank) {
  const std::vector<float> g(1000, 0.0f);
  auto run = [&](std::uint64_t round, int rank) {
    return bits_of(attacked(Attack::gaussian, {}, g, {}, 8, 2, round, rank));
  };
  EXPECT_EQ(run(5, 2), run(5, 2));
  EXPECT_NE(run(5, 2), run(6, 2));
  EXPECT_NE(run(5, 2), run(5, 3));
}

// ---------------------------------------------------------------- names and checks

TEST(AttacksNames, ParseAndPrintRoundTrip) {
  for (Attack a : kAllAttacks) EXPECT_EQ(parse_attack(to_string(a)), a);
  EXPECT_EQ(parse_attack("little-is-enough"), Attack::little_is_enough);
  EXPECT_EQ(parse_attack("bit-flip"), Attack::bit_flip);
  EXPECT_STREQ(to_string(Attack::inner_product), "inner-product");
  try {
    parse_attack("sign_flip");
    FAIL() << "unknown attack accepted";
  } catch (const daa::ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown attack 'sign_flip'"));
    EXPECT_THAT(e.what(), HasSubstr("none, sign-flip, inner-product, little-is-enough, gaussian, "
                                    "label-flip, bit-flip, nan, inf, mimic"));
  }
}

TEST(AttacksParams, ErrorsNameTheParameterAndValue) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  AttackParams p;
  for (Attack a : kAllAttacks) EXPECT_EQ(params_message(a, p), "") << to_string(a);

  p = {};
  p.sign_flip_scale = inf;
  EXPECT_EQ(params_message(Attack::sign_flip, p),
            "config: attack sign-flip: sign_flip_scale = inf must be finite");
  p = {};
  p.sign_flip_scale = -3.0;  // any finite scale is allowed
  EXPECT_EQ(params_message(Attack::sign_flip, p), "");

  p = {};
  p.epsilon = -1.0;
  EXPECT_THAT(params_message(Attack::inner_product, p), HasSubstr("epsilon = -1 must be"));
  p.epsilon = nan;
  EXPECT_THAT(params_message(Attack::inner_product, p), HasSubstr("epsilon = nan"));

  p = {};
  p.z = -0.5;
  EXPECT_THAT(params_message(Attack::little_is_enough, p), HasSubstr("z = -0.5 must be"));
  p.z = inf;
  EXPECT_THAT(params_message(Attack::little_is_enough, p), HasSubstr("z = inf"));

  p = {};
  p.sigma = -2.0;
  EXPECT_THAT(params_message(Attack::gaussian, p), HasSubstr("sigma = -2 must be"));
  p.sigma = nan;
  EXPECT_THAT(params_message(Attack::gaussian, p), HasSubstr("sigma = nan"));

  p = {};
  for (double rate : {0.0, 1.0}) {
    p.bitflip_rate = rate;
    EXPECT_EQ(params_message(Attack::bit_flip, p), "") << rate;
  }
  p.bitflip_rate = 1.5;
  EXPECT_EQ(params_message(Attack::bit_flip, p),
            "config: attack bit-flip: bitflip_rate = 1.5 must be in [0, 1]");
  p.bitflip_rate = -1e-9;
  EXPECT_THAT(params_message(Attack::bit_flip, p), HasSubstr("bitflip_rate = -1e-09"));
  p.bitflip_rate = nan;
  EXPECT_THAT(params_message(Attack::bit_flip, p), HasSubstr("bitflip_rate = nan"));

  // Another attack's parameter is not this attack's business.
  p = {};
  p.sigma = -1.0;
  EXPECT_EQ(params_message(Attack::sign_flip, p), "");
}

TEST(AttacksApply, MissingOrMisSizedHonestViewThrows) {
  const std::vector<float> three = {1.0f, 2.0f, 3.0f};
  try {
    attacked(Attack::inner_product, {}, kG, HonestView{});
    FAIL() << "inner-product without the honest mean accepted";
  } catch (const daa::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("attack inner-product: the honest mean has 0 values for a "
                                    "contribution of 4"));
  }
  EXPECT_THROW(attacked(Attack::little_is_enough, {}, kG, HonestView{kMean, {}, {}}), daa::Error);
  EXPECT_THROW(attacked(Attack::little_is_enough, {}, kG, HonestView{three, kStd, {}}), daa::Error);
  EXPECT_THROW(attacked(Attack::mimic, {}, kG, HonestView{kMean, kStd, {}}), daa::Error);
  EXPECT_THROW(attacked(Attack::mimic, {}, kG, HonestView{{}, {}, three}), daa::Error);
  // Attacks that need no view run without one.
  for (Attack a : {Attack::none, Attack::sign_flip, Attack::gaussian, Attack::label_flip,
                   Attack::bit_flip, Attack::nan, Attack::inf}) {
    EXPECT_NO_THROW(attacked(a, {}, kG, HonestView{})) << to_string(a);
  }
  // Bad parameters and a bad n / f for the derived z are configuration errors.
  AttackParams p;
  p.sigma = -1.0;
  EXPECT_THROW(attacked(Attack::gaussian, p), daa::ConfigError);
  EXPECT_THROW(attacked(Attack::little_is_enough, {}, kG, kView, 4, 4), daa::ConfigError);
}

}  // namespace
