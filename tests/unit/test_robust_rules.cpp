// The robust aggregation rules as a host library: known answers (derived independently by
// tests/robust/derive_known_answers.py, numbers pasted below), robustness properties under
// huge/NaN contributions, permutation invariance, the n-vs-f requirements and the outcome weights.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/core/error.hpp"
#include "daa/robust/allreduce.hpp"
#include "daa/robust/attacks.hpp"
#include "daa/robust/rules.hpp"

namespace {

using daa::robust::aggregate;
using daa::robust::check_requirement;
using daa::robust::parse_rule;
using daa::robust::Rule;
using daa::robust::RuleOutcome;
using daa::robust::RuleParams;
using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pointwise;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

const Rule kAllRules[] = {
    Rule::mean, Rule::median,     Rule::trimmed_mean, Rule::geometric_median,
    Rule::krum, Rule::multi_krum, Rule::bulyan,       Rule::centered_clipping};
const Rule kRobustRules[] = {
    Rule::median,     Rule::trimmed_mean, Rule::geometric_median, Rule::krum,
    Rule::multi_krum, Rule::bulyan,       Rule::centered_clipping};

// Set A: n = 5, d = 2, f = 1 (x4 is the outlier).
const std::vector<double> kSetA = {1, 2, 2, 0, 3, 1, 4, 5, 10, -3};
// Set B: n = 7, d = 3, f = 1 (x6 is the outlier); big enough for Bulyan.
const std::vector<double> kSetB = {0.0, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0, 0.0, 2.5,  -0.5, 1.0,
                                   1.5, 0.2, 0.8, 2.2, 1.5, 2.0, 0.5, 9.0, -7.0, 6.0};

RuleParams with_f(int f) {
  RuleParams p;
  p.f = f;
  return p;
}

std::vector<double> run(Rule rule, const std::vector<double>& rows, int n, const RuleParams& p,
                        RuleOutcome* outcome = nullptr) {
  return aggregate(rule, rows, n, static_cast<int>(rows.size()) / n, p, outcome);
}

auto Near(const std::vector<double>& expected, double tol = 1e-12) {
  return Pointwise(DoubleNear(tol), expected);
}

// ---------------------------------------------------------------- known answers

TEST(RobustRulesKnownAnswer, SetA) {
  const RuleParams p = with_f(1);
  EXPECT_THAT(run(Rule::mean, kSetA, 5, p), Near({4.0, 1.0}));
  EXPECT_THAT(run(Rule::median, kSetA, 5, p), Near({3.0, 1.0}));
  EXPECT_THAT(run(Rule::trimmed_mean, kSetA, 5, p), Near({3.0, 1.0}));
  // Scores {10, 7, 7, 35, 138}: x1 and x2 tie, the lowest index wins.
  EXPECT_THAT(run(Rule::krum, kSetA, 5, p), Near({2.0, 0.0}));
  EXPECT_THAT(run(Rule::multi_krum, kSetA, 5, p), Near({2.5, 2.0}));  // m = n - f: x0..x3
  RuleParams m2 = p;
  m2.multi_krum_m = 2;
  EXPECT_THAT(run(Rule::multi_krum, kSetA, 5, m2), Near({2.5, 0.5}));  // x1, x2
  // Weiszfeld lands on the data point x2 (smoothed by nu).
  EXPECT_THAT(run(Rule::geometric_median, kSetA, 5, p),
              Near({2.999999509245177, 1.0000002141101132}, 1e-9));
  EXPECT_THAT(run(Rule::centered_clipping, kSetA, 5, p),
              Near({2.7999119884947126, 1.0796881217426348}));
  RuleParams cc = p;
  cc.clip_tau = 0.5;
  cc.clip_iterations = 5;
  EXPECT_THAT(run(Rule::centered_clipping, kSetA, 5, cc),
              Near({2.8589787175101216, 1.0567507755210874}));
}

TEST(RobustRulesKnownAnswer, SetB) {
  const RuleParams p = with_f(1);
  EXPECT_THAT(run(Rule::mean, kSetB, 7, p),
              Near({1.6714285714285713, -0.10000000000000002, 2.242857142857143}));
  EXPECT_THAT(run(Rule::median, kSetB, 7, p), Near({0.5, 1.0, 2.0}));
  EXPECT_THAT(run(Rule::trimmed_mean, kSetB, 7, p), Near({0.64, 0.86, 1.8399999999999999}));
  EXPECT_THAT(run(Rule::krum, kSetB, 7, p), Near({0.0, 1.0, 2.0}));  // score 4.37 < 4.53
  EXPECT_THAT(run(Rule::multi_krum, kSetB, 7, p), Near({0.45, 1.05, 1.6166666666666665}));
  RuleParams m2 = p;
  m2.multi_krum_m = 2;
  EXPECT_THAT(run(Rule::multi_krum, kSetB, 7, m2), Near({0.1, 0.9, 2.1}));  // x0, x4
  // Iterated Krum keeps x0..x4; per coordinate the 3 values closest to the median of those
  // (coordinate 2: x2 and x3 are both 0.5 away, x2 wins by index).
  EXPECT_THAT(run(Rule::bulyan, kSetB, 7, p),
              Near({0.2333333333333333, 0.9333333333333332, 2.2333333333333334}));
  EXPECT_THAT(run(Rule::geometric_median, kSetB, 7, p),
              Near({0.27784370667060415, 0.877934188994781, 1.9262133175623184}, 1e-9));
  EXPECT_THAT(run(Rule::centered_clipping, kSetB, 7, p),
              Near({0.46656268595504213, 0.8793092412311063, 1.760079718009992}));
}

TEST(RobustRulesKnownAnswer, EvenMedianAveragesTheTwoMiddleValues) {
  const std::vector<double> rows = {1, 10, 4, 20, 2, 30, 8, 40};  // n = 4, d = 2
  EXPECT_THAT(run(Rule::median, rows, 4, with_f(1)), Near({3.0, 25.0}));
  RuleOutcome o;
  run(Rule::median, rows, 4, with_f(1), &o);
  // Coordinate 0: x2 (2) and x1 (4); coordinate 1: x1 (20) and x2 (30).
  EXPECT_THAT(o.weight, Near({0.0, 1.0, 1.0, 0.0}));
}

TEST(RobustRulesKnownAnswer, NearestNeighbourMixingPreStep) {
  RuleParams p = with_f(1);
  p.nnm = true;
  // Set A: x0..x3 each become the mean of x0..x3 = (2.5, 2); x4 becomes (4.75, 0.75).
  EXPECT_THAT(run(Rule::mean, kSetA, 5, p), Near({2.95, 1.75}));
  EXPECT_THAT(run(Rule::median, kSetA, 5, p), Near({2.5, 2.0}));
  EXPECT_THAT(run(Rule::krum, kSetA, 5, p), Near({2.5, 2.0}));
  // Without NNM the same rules give (4, 1), (3, 1), (2, 0).
  EXPECT_THAT(run(Rule::median, kSetA, 5, with_f(1)), Near({3.0, 1.0}));
  EXPECT_THAT(run(Rule::mean, kSetB, 7, p),
              Near({0.6761904761904762, 0.8595238095238095, 1.7238095238095237}));
  EXPECT_THAT(run(Rule::median, kSetB, 7, p), Near({0.45, 1.05, 1.6166666666666665}));
}

// ---------------------------------------------------------------- outcome weights

TEST(RobustRulesOutcome, WeightsPerRule) {
  const RuleParams p = with_f(1);
  RuleOutcome o;
  run(Rule::mean, kSetA, 5, p, &o);
  EXPECT_THAT(o.weight, Near({0.2, 0.2, 0.2, 0.2, 0.2}));
  run(Rule::krum, kSetA, 5, p, &o);
  EXPECT_THAT(o.weight, ElementsAre(0.0, 1.0, 0.0, 0.0, 0.0));
  run(Rule::krum, kSetB, 7, p, &o);
  EXPECT_THAT(o.weight, ElementsAre(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0));
  RuleParams m2 = p;
  m2.multi_krum_m = 2;
  run(Rule::multi_krum, kSetA, 5, m2, &o);
  EXPECT_THAT(o.weight, ElementsAre(0.0, 0.5, 0.5, 0.0, 0.0));
  run(Rule::median, kSetA, 5, p, &o);
  EXPECT_THAT(o.weight, Near({0.0, 0.0, 1.0, 0.0, 0.0}));
  // Coordinate 0 keeps x1, x2, x3; coordinate 1 keeps x1, x2, x0.
  run(Rule::trimmed_mean, kSetA, 5, p, &o);
  EXPECT_THAT(o.weight, Near({0.5, 1.0, 1.0, 0.5, 0.0}));
  run(Rule::bulyan, kSetB, 7, p, &o);
  EXPECT_THAT(o.weight, Near({1.0, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1.0, 0.0, 0.0}));
  run(Rule::geometric_median, kSetB, 7, p, &o);
  EXPECT_THAT(o.weight, Near({0.32312502284794764, 0.0887087745115465, 0.07925121766672495,
                              0.11271641528974939, 0.3419599292526373, 0.04612579207399848,
                              0.00811284835739581},
                             1e-8));
  run(Rule::centered_clipping, kSetB, 7, p, &o);
  EXPECT_THAT(o.weight, Near({1.0, 1.0, 0.7993895716633738, 0.9803678278806229, 1.0,
                              0.502793086588288, 0.08095996866368775}));
}

// ---------------------------------------------------------------- properties

// n honest rows of d values around `center`, noise in [-1, 1].
std::vector<double> honest_rows(int n, int d, double center, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> rows(static_cast<size_t>(n) * d);
  for (double& x : rows) x = center + u(rng);
  return rows;
}

// Inserts `f` attacker rows filled with `value` at positions `at` (ascending) among the honest.
std::vector<double> with_attackers(const std::vector<double>& honest, int d,
                                   const std::vector<int>& at, double value) {
  std::vector<double> rows;
  const int n = static_cast<int>(honest.size()) / d + static_cast<int>(at.size());
  size_t h = 0;
  for (int i = 0; i < n; ++i) {
    if (std::find(at.begin(), at.end(), i) != at.end()) {
      rows.insert(rows.end(), d, value);
    } else {
      rows.insert(rows.end(), honest.begin() + h, honest.begin() + h + d);
      h += d;
    }
  }
  return rows;
}

TEST(RobustRulesProperty, PermutationInvariance) {
  const int n = 11, d = 4;
  const std::vector<double> rows = honest_rows(n, d, 3.0, 7);
  std::mt19937_64 rng(11);
  for (bool nnm : {false, true}) {
    RuleParams p = with_f(2);
    p.nnm = nnm;
    for (Rule rule : kAllRules) {
      // Bulyan's last iterated-Krum steps tie structurally (see rules.hpp) and break ties by
      // index, so it is order-independent only with f = 0; its f > 0 order dependence is shown in
      // BulyanLastKrumStepsTieTowardsTheLowestIndex.
      p.f = rule == Rule::bulyan ? 0 : 2;
      const std::vector<double> reference = run(rule, rows, n, p);
      for (int trial = 0; trial < 5; ++trial) {
        std::vector<int> perm(n);
        std::iota(perm.begin(), perm.end(), 0);
        std::shuffle(perm.begin(), perm.end(), rng);
        std::vector<double> shuffled;
        for (int i : perm)
          shuffled.insert(shuffled.end(), rows.begin() + i * d, rows.begin() + (i + 1) * d);
        EXPECT_THAT(run(rule, shuffled, n, p), Near(reference))
            << to_string(rule) << " nnm=" << nnm << " trial " << trial;
      }
    }
  }
}

TEST(RobustRulesProperty, CoordinateWiseRulesStayInsideTheHonestRange) {
  const int d = 5, f = 2, n_honest = 9;
  const std::vector<double> honest = honest_rows(n_honest, d, -2.0, 3);
  std::vector<double> lo(d, kInf), hi(d, -kInf);
  for (int i = 0; i < n_honest; ++i) {
    for (int j = 0; j < d; ++j) {
      lo[j] = std::min(lo[j], honest[i * d + j]);
      hi[j] = std::max(hi[j], honest[i * d + j]);
    }
  }
  for (double attack : {1e30, -1e30, 50.0, -50.0, kNaN, kInf, -kInf, 0.5}) {
    for (const std::vector<int>& at : {std::vector<int>{0, 1}, std::vector<int>{3, 10}}) {
      const std::vector<double> rows = with_attackers(honest, d, at, attack);
      for (Rule rule : {Rule::median, Rule::trimmed_mean, Rule::bulyan}) {
        const std::vector<double> out = run(rule, rows, n_honest + f, with_f(f));
        for (int j = 0; j < d; ++j) {
          EXPECT_GE(out[j], lo[j]) << to_string(rule) << " attack " << attack << " coord " << j;
          EXPECT_LE(out[j], hi[j]) << to_string(rule) << " attack " << attack << " coord " << j;
        }
      }
    }
  }
}

TEST(RobustRulesProperty, HugeOrNonFiniteContributionsStayWithinTheHonestSpread) {
  const int d = 4, f = 2, n_honest = 9, n = n_honest + f;
  const std::vector<double> honest = honest_rows(n_honest, d, 5.0, 5);
  std::vector<double> mean(d, 0.0);
  for (int i = 0; i < n_honest; ++i) {
    for (int j = 0; j < d; ++j) mean[j] += honest[i * d + j] / n_honest;
  }
  double radius = 0.0;  // of the honest rows around their mean
  for (int i = 0; i < n_honest; ++i) {
    double s = 0.0;
    for (int j = 0; j < d; ++j) s += (honest[i * d + j] - mean[j]) * (honest[i * d + j] - mean[j]);
    radius = std::max(radius, std::sqrt(s));
  }
  for (double attack : {1e30, -1e30, kNaN, kInf}) {
    for (const std::vector<int>& at : {std::vector<int>{0, 5}, std::vector<int>{9, 10}}) {
      const std::vector<double> rows = with_attackers(honest, d, at, attack);
      for (Rule rule : kRobustRules) {
        const std::vector<double> out = run(rule, rows, n, with_f(f));
        double s = 0.0;
        for (int j = 0; j < d; ++j) {
          ASSERT_TRUE(std::isfinite(out[j])) << to_string(rule) << " attack " << attack;
          s += (out[j] - mean[j]) * (out[j] - mean[j]);
        }
        EXPECT_LE(std::sqrt(s), radius) << to_string(rule) << " attack " << attack;
      }
    }
  }
  // The plain mean is not robust: that is the point of comparing.
  const std::vector<double> poisoned = with_attackers(honest, d, {3}, kNaN);
  for (double x : run(Rule::mean, poisoned, n_honest + 1, with_f(0))) EXPECT_TRUE(std::isnan(x));
}

TEST(RobustRulesProperty, SelectionRulesIgnoreFarAttackersExactly) {
  const int d = 3, f = 2, n_honest = 9, n = n_honest + f;
  const std::vector<double> honest = honest_rows(n_honest, d, 1.0, 9);
  // Krum over the honest rows alone with f = 0 scores with the same n - f - 2 neighbours.
  const std::vector<double> krum_ref = run(Rule::krum, honest, n_honest, with_f(0));
  const std::vector<double> mkrum_ref = run(Rule::multi_krum, honest, n_honest, with_f(0));
  std::vector<double> bulyan_ref;
  for (double attack : {1e30, -1e30, kNaN, kInf, -kInf}) {
    for (const std::vector<int>& at : {std::vector<int>{0, 1}, std::vector<int>{4, 10}}) {
      const std::vector<double> rows = with_attackers(honest, d, at, attack);
      EXPECT_EQ(run(Rule::krum, rows, n, with_f(f)), krum_ref) << attack;
      EXPECT_EQ(run(Rule::multi_krum, rows, n, with_f(f)), mkrum_ref) << attack;
      RuleOutcome o;
      const std::vector<double> b = run(Rule::bulyan, rows, n, with_f(f), &o);
      for (int i : at) EXPECT_EQ(o.weight[i], 0.0) << "bulyan used attacker " << i;
      if (std::isfinite(attack)) continue;  // colocated finite attackers may enter the selection
      // Non-finite rows are never selected: the result is the same whatever they hold.
      if (bulyan_ref.empty()) bulyan_ref = b;
      EXPECT_EQ(b, bulyan_ref) << "bulyan depends on the attackers' values: " << attack;
    }
  }
}

TEST(RobustRulesProperty, BulyanLastKrumStepsTieTowardsTheLowestIndex) {
  // f = 1, n = 7: theta = 5; the 5th pick is among k = 3 rows scored over 0 neighbours, so all
  // score 0 and the lowest remaining index wins. Set B picks x0, x4, x1, x2, then x3 over x5, x6.
  RuleOutcome o;
  run(Rule::bulyan, kSetB, 7, with_f(1), &o);
  EXPECT_EQ(o.weight[5], 0.0);
  // Swap x2 and x5: picks x0, x4, x1, x3, then index 2 (the old x5) over index 5 (the old x2).
  std::vector<double> swapped = kSetB;
  std::swap_ranges(swapped.begin() + 6, swapped.begin() + 9, swapped.begin() + 15);
  const std::vector<double> out = run(Rule::bulyan, swapped, 7, with_f(1), &o);
  EXPECT_EQ(o.weight[5], 0.0);
  // The old x5 is never among the 3 values closest to a median, but it moves coordinate 2's
  // median from 2 to 1.5: the average becomes (2 + 1.5 + 1) / 3 = 1.5 instead of 2.2333...
  EXPECT_THAT(out, Near({0.2333333333333333, 0.9333333333333332, 1.5}));
}

TEST(RobustRulesProperty, PartlyNonFiniteRowNeverReachesTheResult) {
  // x4 of set A with one NaN coordinate: distance rules drop the row, coordinate rules the value.
  std::vector<double> rows = kSetA;
  rows[9] = kNaN;  // x4 = (10, NaN)
  RuleOutcome o;
  EXPECT_THAT(run(Rule::krum, rows, 5, with_f(1), &o), Near({2.0, 0.0}));
  EXPECT_EQ(o.weight[4], 0.0);
  run(Rule::geometric_median, rows, 5, with_f(1), &o);
  EXPECT_EQ(o.weight[4], 0.0);
  run(Rule::centered_clipping, rows, 5, with_f(1), &o);
  EXPECT_EQ(o.weight[4], 0.0);
  // Coordinate 1 values {2, 0, 1, 5, NaN}: the finite {0, 1, 2, 5} have median (1 + 2) / 2, and
  // with the NaN counting as one of f = 1 trimmed, the trimmed mean keeps all four: 8 / 4.
  EXPECT_THAT(run(Rule::median, rows, 5, with_f(1)), Near({3.0, 1.5}));
  EXPECT_THAT(run(Rule::trimmed_mean, rows, 5, with_f(1)), Near({3.0, 2.0}));
  RuleParams p = with_f(1);
  p.nnm = true;
  for (double x : run(Rule::median, rows, 5, p)) EXPECT_TRUE(std::isfinite(x));
}

// ---------------------------------------------------------------- requirements and names

std::string requirement_message(Rule rule, int n, int f, const std::string& group) {
  try {
    check_requirement(rule, n, f, group);
  } catch (const daa::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(RobustRulesRequirement, MessagesNameRuleGroupNAndF) {
  EXPECT_EQ(requirement_message(Rule::krum, 4, 1, "data-parallel"),
            "config: robust rule krum needs n >= 2f+3 ranks; group 'data-parallel' has n = 4 with "
            "f = 1");
  EXPECT_EQ(requirement_message(Rule::multi_krum, 6, 2, "expert-dp"),
            "config: robust rule multi-krum needs n >= 2f+3 ranks; group 'expert-dp' has n = 6 "
            "with f = 2");
  EXPECT_EQ(requirement_message(Rule::bulyan, 6, 1, "data-parallel"),
            "config: robust rule bulyan needs n >= 4f+3 ranks; group 'data-parallel' has n = 6 "
            "with f = 1");
  for (Rule rule :
       {Rule::median, Rule::trimmed_mean, Rule::geometric_median, Rule::centered_clipping}) {
    EXPECT_EQ(requirement_message(rule, 4, 2, "g"),
              std::string("config: robust rule ") + to_string(rule) +
                  " needs n > 2f ranks; group 'g' has n = 4 with f = 2");
    EXPECT_EQ(requirement_message(rule, 5, 2, "g"), "");
  }
  EXPECT_EQ(requirement_message(Rule::krum, 5, 1, "g"), "");
  EXPECT_EQ(requirement_message(Rule::bulyan, 7, 1, "g"), "");
  EXPECT_EQ(requirement_message(Rule::mean, 1, 3, "g"), "");  // mean ignores f
  EXPECT_THAT(requirement_message(Rule::mean, 4, -1, "g"), HasSubstr("needs f >= 0"));
  EXPECT_THAT(requirement_message(Rule::median, 0, 0, "g"), HasSubstr("needs n >= 1"));
}

TEST(RobustRulesRequirement, AggregateChecksItsInputs) {
  const std::vector<double> rows(4 * 2, 1.0);
  try {
    aggregate(Rule::krum, rows, 4, 2, with_f(1));
    FAIL() << "krum with n = 4, f = 1 accepted";
  } catch (const daa::ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("group 'aggregate' has n = 4 with f = 1"));
  }
  EXPECT_THROW(aggregate(Rule::mean, rows, 4, 3, with_f(0)), daa::Error);  // size mismatch
  RuleParams m = with_f(1);
  m.multi_krum_m = 5;  // > n - f
  EXPECT_THROW(aggregate(Rule::multi_krum, std::vector<double>(10, 1.0), 5, 2, m),
               daa::ConfigError);
  RuleParams cc = with_f(1);
  cc.clip_tau = 0.0;
  EXPECT_THROW(aggregate(Rule::centered_clipping, rows, 4, 2, cc), daa::ConfigError);
}

TEST(RobustRulesNames, ParseAndPrintRoundTrip) {
  for (Rule rule : kAllRules) EXPECT_EQ(parse_rule(to_string(rule)), rule);
  EXPECT_EQ(parse_rule("trimmed-mean"), Rule::trimmed_mean);
  EXPECT_EQ(parse_rule("centered-clipping"), Rule::centered_clipping);
  try {
    parse_rule("krum2");
    FAIL() << "unknown rule accepted";
  } catch (const daa::ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown robust rule 'krum2'"));
    EXPECT_THAT(e.what(),
                HasSubstr("mean, median, trimmed-mean, geometric-median, krum, multi-krum, "
                          "bulyan, centered-clipping"));
  }
}

// The input file names rules, modes and attacks as strings (core cannot see robust's enums):
// every name robust knows is accepted by the config, and parses back to itself.
// The names the input schema accepts for `key`, read from its "is not one of ..." refusal.
std::vector<std::string> accepted_names(const std::string& key,
                                        const std::vector<std::string>& context = {}) {
  std::vector<std::string> overrides = context;
  overrides.push_back(key + "=no-such-name");
  std::string message;
  try {
    daa::core::parse_config("", "x.toml", overrides);
  } catch (const daa::ConfigError& e) {
    message = e.what();
  }
  const std::size_t list = message.find("is not one of ");
  EXPECT_NE(list, std::string::npos) << key << ": " << message;
  std::vector<std::string> names;
  for (std::size_t open = message.find('"', list); open != std::string::npos;
       open = message.find('"', message.find('"', open + 1) + 1))
    names.push_back(message.substr(open + 1, message.find('"', open + 1) - open - 1));
  return names;
}

TEST(RobustRulesNames, EveryNameTheSchemaAcceptsIsARuleModeOrAttack) {
  for (const char* key : {"robust.rule", "consensus.rule"}) {
    const std::vector<std::string> names = accepted_names(key);
    EXPECT_EQ(names.size(), std::size(kAllRules)) << key;
    for (const std::string& name : names) EXPECT_NO_THROW(parse_rule(name)) << key << " " << name;
  }
  const std::vector<std::string> modes = accepted_names("robust.mode");
  EXPECT_EQ(modes.size(), 3u);
  for (const std::string& name : modes) EXPECT_NO_THROW(daa::robust::parse_mode(name)) << name;
  const std::vector<std::string> attacks =
      accepted_names("byzantine.attack", {"byzantine.ranks=0"});
  EXPECT_EQ(attacks.size(), 10u);  // "none" and the nine attacks of the test below
  for (const std::string& name : attacks) EXPECT_NO_THROW(daa::robust::parse_attack(name)) << name;
}

TEST(RobustRulesNames, ConfigAcceptsEveryRuleModeAndAttack) {
  for (Rule rule : kAllRules) {
    const std::string name = daa::robust::to_string(rule);
    const auto c = daa::core::parse_config(
        "", "x.toml", {"robust.rule=" + name, "robust.mode=replicated", "consensus.rule=" + name});
    EXPECT_EQ(parse_rule(c.robust.rule), rule);
    EXPECT_EQ(parse_rule(c.consensus.rule), rule);
  }
  for (auto mode :
       {daa::robust::Mode::allreduce, daa::robust::Mode::replicated, daa::robust::Mode::sharded}) {
    const auto c = daa::core::parse_config(
        "", "x.toml", {std::string("robust.mode=") + daa::robust::to_string(mode)});
    EXPECT_EQ(daa::robust::parse_mode(c.robust.mode), mode);
  }
  using daa::robust::Attack;
  for (Attack a :
       {Attack::sign_flip, Attack::inner_product, Attack::little_is_enough, Attack::gaussian,
        Attack::label_flip, Attack::bit_flip, Attack::nan, Attack::inf, Attack::mimic}) {
    const auto c = daa::core::parse_config(
        "", "x.toml",
        {"byzantine.ranks=0", std::string("byzantine.attack=") + daa::robust::to_string(a)});
    EXPECT_EQ(daa::robust::parse_attack(c.byzantine.attack), a);
  }
  EXPECT_THROW(daa::core::parse_config("", "x.toml", {"robust.rule=krumm"}), daa::ConfigError);
}

}  // namespace
