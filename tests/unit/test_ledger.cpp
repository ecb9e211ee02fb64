// The contribution ledger as a host library: judging against hand-computed medians, the Beta
// reputation with and without forgetting, reward arithmetic, suspects, the report, parameter and
// rank errors, the wire format, and that equal inputs give bit-identical ledgers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/robust/ledger.hpp"

namespace {

using daa::robust::check_ledger_params;
using daa::robust::deserialize_records;
using daa::robust::judge_round;
using daa::robust::Ledger;
using daa::robust::LedgerParams;
using daa::robust::RankAccount;
using daa::robust::RoundRecord;
using daa::robust::serialize_records;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

RoundRecord rec(int rank, double distance, double samples = 10, double weight = 0) {
  RoundRecord r;
  r.rank = rank;
  r.distance = distance;
  r.samples = samples;
  r.weight = weight;
  return r;
}
RoundRecord non_finite(int rank, double samples = 10) {
  RoundRecord r = rec(rank, kInf, samples);
  r.non_finite = true;
  return r;
}
RoundRecord accused(int rank, double distance, double samples = 10) {
  RoundRecord r = rec(rank, distance, samples);
  r.accused = true;
  return r;
}
RoundRecord excluded(int rank, double distance, double samples = 10) {
  RoundRecord r = rec(rank, distance, samples);
  r.excluded = true;
  return r;
}

// Compares bits, not values, so that "bit-identical" means what it says (and 0.0 != -0.0).
bool same_bits(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

void expect_same_account(const RankAccount& a, const RankAccount& b) {
  EXPECT_EQ(a.rank, b.rank);
  EXPECT_EQ(a.host, b.host);
  EXPECT_EQ(a.rounds, b.rounds);
  EXPECT_EQ(a.accepted, b.accepted);
  EXPECT_EQ(a.rejected, b.rejected);
  EXPECT_EQ(a.accusations, b.accusations);
  EXPECT_EQ(a.non_finite, b.non_finite);
  EXPECT_TRUE(same_bits(a.samples, b.samples)) << "rank " << a.rank;
  EXPECT_TRUE(same_bits(a.weight_sum, b.weight_sum)) << "rank " << a.rank;
  EXPECT_TRUE(same_bits(a.distance_sum, b.distance_sum)) << "rank " << a.rank;
  EXPECT_TRUE(same_bits(a.accepted_mass, b.accepted_mass)) << "rank " << a.rank;
  EXPECT_TRUE(same_bits(a.rejected_mass, b.rejected_mass)) << "rank " << a.rank;
  EXPECT_TRUE(same_bits(a.reward, b.reward)) << "rank " << a.rank;
  EXPECT_EQ(a.quarantined, b.quarantined);
}

void expect_same_record(const RoundRecord& a, const RoundRecord& b) {
  EXPECT_EQ(a.rank, b.rank);
  EXPECT_TRUE(same_bits(a.samples, b.samples));
  EXPECT_TRUE(same_bits(a.weight, b.weight));
  EXPECT_TRUE(same_bits(a.distance, b.distance));
  EXPECT_TRUE(same_bits(a.along, b.along));
  EXPECT_EQ(a.non_finite, b.non_finite);
  EXPECT_EQ(a.accused, b.accused);
  EXPECT_EQ(a.excluded, b.excluded);
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const daa::Error& e) {
    return e.what();
  }
  return "(no error)";
}

template <class F>
std::string config_error_of(F&& f) {
  try {
    f();
  } catch (const daa::ConfigError& e) {
    return e.what();
  }
  return "(no config error)";
}

// A one-rank round: the median is the rank's own distance, so it is accepted unless flagged.
void one_rank_round(Ledger& ledger, bool accept) {
  const std::vector<RoundRecord> round = {accept ? rec(0, 1.0) : accused(0, 1.0)};
  ledger.apply_round(round);
}

// ---------------------------------------------------------------- judging

TEST(LedgerJudge, OutlierNaNAccusedExcluded) {
  LedgerParams p;
  p.distance_ratio = 3.0;
  const std::vector<RoundRecord> round = {
      rec(0, 1.0),
      rec(1, 2.0),
      rec(2, 6.0),    // exactly 3 x median: the test is <=
      rec(3, 100.0),  // the far outlier
      [] {
        RoundRecord r = rec(4, kNaN);
        r.non_finite = true;
        return r;
      }(),
      accused(5, 1.5),
      excluded(6, 0.5),
      rec(7, kInf),  // non-finite distance without the flag: still non-finite
  };
  // Finite non-excluded distances, sorted: {1, 1.5, 2, 6, 100} -> median 2, bound 3 * 2 = 6.
  // Had the excluded 0.5 joined: {0.5, 1, 1.5, 2, 6, 100} -> median 1.75, bound 5.25, and rank 2
  // would be rejected.
  EXPECT_THAT(judge_round(round, p), ElementsAre(1, 1, 1, 0, 0, 0, 0, 0));
}

TEST(LedgerJudge, EvenCountTakesTheMeanOfTheMiddleTwo) {
  LedgerParams p;
  p.distance_ratio = 1.5;
  const std::vector<RoundRecord> round = {rec(0, 8.0), rec(1, 1.0), rec(2, 6.0),
                                          rec(3, 2.0), rec(4, 7.5), rec(5, 4.0)};
  // Sorted {1, 2, 4, 6, 7.5, 8}: median (4 + 6) / 2 = 5, bound 1.5 * 5 = 7.5: only 8 is out.
  // The lower middle (4) would give bound 6 and reject 7.5; the upper (6), bound 9, accept 8.
  EXPECT_THAT(judge_round(round, p), ElementsAre(0, 1, 1, 1, 1, 1));
}

TEST(LedgerJudge, ZeroMedianAcceptsOnlyZeroDistances) {
  const LedgerParams p;
  // Sorted {0, 0, 0, 0.1}: median (0 + 0) / 2 = 0, bound 0.
  const std::vector<RoundRecord> round = {rec(0, 0.0), rec(1, 0.0), rec(2, 0.1), rec(3, 0.0)};
  EXPECT_THAT(judge_round(round, p), ElementsAre(1, 1, 0, 1));
  const std::vector<RoundRecord> identical = {rec(0, 0.0), rec(1, 0.0), rec(2, 0.0)};
  EXPECT_THAT(judge_round(identical, p), ElementsAre(1, 1, 1));
}

TEST(LedgerJudge, NothingFiniteRejectsAll) {
  const LedgerParams p;
  const std::vector<RoundRecord> round = {non_finite(0), excluded(1, 0.0), non_finite(2)};
  EXPECT_THAT(judge_round(round, p), ElementsAre(0, 0, 0));
  EXPECT_THAT(judge_round({}, p), IsEmpty());
}

// ---------------------------------------------------------------- reputation

TEST(LedgerReputation, StartsAtOneHalf) {
  const Ledger ledger(2, LedgerParams{});
  EXPECT_DOUBLE_EQ(ledger.accounts()[0].reputation(), 0.5);  // 1 / (1 + 1)
}

TEST(LedgerReputation, NoForgettingIsTheBetaMean) {
  LedgerParams p;
  p.forgetting = 1.0;
  Ledger ledger(1, p);
  // k = 3 accepted and m = 2 rejected (accused) rounds, interleaved.
  for (bool accept : {true, true, false, true, false}) one_rank_round(ledger, accept);
  const RankAccount& a = ledger.accounts()[0];
  EXPECT_EQ(a.rounds, 5);
  EXPECT_EQ(a.accepted, 3);
  EXPECT_EQ(a.rejected, 2);
  EXPECT_EQ(a.accusations, 2);
  EXPECT_EQ(a.accepted_mass, 3.0);
  EXPECT_EQ(a.rejected_mass, 2.0);
  EXPECT_DOUBLE_EQ(a.reputation(), 4.0 / 7.0);  // (1 + k) / (2 + k + m) = 4 / 7
}

TEST(LedgerReputation, ForgettingWeighsRecentRounds) {
  LedgerParams p;
  p.forgetting = 0.5;
  Ledger first(1, p);
  // accept: a = 0 * 0.5 + 1 = 1,      r = 0                 -> rep 2 / 3
  // accept: a = 1 * 0.5 + 1 = 1.5,    r = 0                 -> rep 2.5 / 3.5 = 5 / 7
  // reject: a = 1.5 * 0.5 = 0.75,     r = 0 * 0.5 + 1 = 1   -> rep 1.75 / 3.75 = 7 / 15
  one_rank_round(first, true);
  EXPECT_DOUBLE_EQ(first.accounts()[0].reputation(), 2.0 / 3.0);
  one_rank_round(first, true);
  EXPECT_DOUBLE_EQ(first.accounts()[0].reputation(), 5.0 / 7.0);
  one_rank_round(first, false);
  EXPECT_EQ(first.accounts()[0].accepted_mass, 0.75);
  EXPECT_EQ(first.accounts()[0].rejected_mass, 1.0);
  EXPECT_DOUBLE_EQ(first.accounts()[0].reputation(), 7.0 / 15.0);

  // The same rounds, rejection first: r = 1 -> (a = 1, r = 0.5) -> (a = 1.5, r = 0.25):
  // rep 2.5 / 3.75 = 2 / 3, above the 7 / 15 of the recent rejection.
  Ledger second(1, p);
  for (bool accept : {false, true, true}) one_rank_round(second, accept);
  EXPECT_EQ(second.accounts()[0].accepted_mass, 1.5);
  EXPECT_EQ(second.accounts()[0].rejected_mass, 0.25);
  EXPECT_DOUBLE_EQ(second.accounts()[0].reputation(), 2.0 / 3.0);
}

// ---------------------------------------------------------------- rounds and rewards

TEST(LedgerRound, RewardsAndCounts) {
  LedgerParams p;
  p.forgetting = 1.0;
  p.reward_per_sample = 0.01;
  p.quality_bonus = 2.0;
  Ledger ledger(5, p);
  const std::vector<RoundRecord> round = {
      rec(1, 1.0, 200, 0.5),
      rec(0, 1.0, 100, 0.25),
      accused(2, 1.0, 50),
      excluded(3, 0.2, 80),
  };
  // Median of {1, 1, 1} = 1, bound 3; members = 3 (rank 3 is excluded, rank 4 is not in it).
  ledger.apply_round(round);
  const auto& acc = ledger.accounts();
  // Rank 0 accepted: rep 2 / 3; reward 0.01 * 100 * 2/3 + 2 * 0.25 * 3 = 2/3 + 1.5 = 13 / 6.
  EXPECT_NEAR(acc[0].reward, 13.0 / 6.0, 1e-12);
  // Rank 1 accepted: 0.01 * 200 * 2/3 + 2 * 0.5 * 3 = 4/3 + 3 = 13 / 3.
  EXPECT_NEAR(acc[1].reward, 13.0 / 3.0, 1e-12);
  // Rank 2 rejected: rep 1 / 3; 0.01 * 50 * 1/3 = 1 / 6, no bonus.
  EXPECT_NEAR(acc[2].reward, 1.0 / 6.0, 1e-12);
  EXPECT_EQ(acc[0].samples, 100.0);
  EXPECT_EQ(acc[0].weight_sum, 0.25);
  EXPECT_EQ(acc[0].distance_sum, 1.0);
  EXPECT_EQ(acc[2].accusations, 1);
  EXPECT_EQ(acc[2].rejected, 1);
  // Excluded: not a round, no samples, no reward, but quarantined.
  EXPECT_EQ(acc[3].rounds, 0);
  EXPECT_EQ(acc[3].samples, 0.0);
  EXPECT_EQ(acc[3].reward, 0.0);
  EXPECT_DOUBLE_EQ(acc[3].reputation(), 0.5);
  EXPECT_TRUE(acc[3].quarantined);
  // Not in the round: untouched.
  EXPECT_EQ(acc[4].rounds, 0);
  EXPECT_FALSE(acc[4].quarantined);

  // Second time: rank 0 rep 3 / 4; reward += 0.01 * 100 * 3/4 + 1.5 = 2.25 -> 13/6 + 9/4 = 53/12.
  ledger.apply_round(round);
  EXPECT_NEAR(acc[0].reward, 53.0 / 12.0, 1e-12);
  EXPECT_EQ(acc[0].rounds, 2);
  EXPECT_EQ(acc[0].distance_sum, 2.0);
}

TEST(LedgerRound, NonFiniteDistancesStayOutOfTheSum) {
  Ledger ledger(2, LedgerParams{});
  const std::vector<RoundRecord> round = {rec(0, 2.0), non_finite(1)};
  ledger.apply_round(round);
  ledger.apply_round(round);
  const auto& acc = ledger.accounts();
  EXPECT_EQ(acc[1].non_finite, 2);
  EXPECT_EQ(acc[1].rejected, 2);
  EXPECT_EQ(acc[1].distance_sum, 0.0);
  EXPECT_EQ(acc[1].samples, 20.0);
  EXPECT_EQ(acc[0].distance_sum, 4.0);
  EXPECT_EQ(acc[0].accepted, 2);
}

// ---------------------------------------------------------------- suspects

TEST(LedgerSuspects, RespectMinRounds) {
  LedgerParams p;
  p.min_rounds = 3;
  p.suspicion_threshold = 0.5;
  Ledger ledger(3, p);
  const std::vector<RoundRecord> two = {rec(0, 1.0), non_finite(1)};
  ledger.apply_round(two);
  ledger.apply_round(two);
  // Rank 1: rep 1 / 4 < 0.5, but 2 rounds < 3.
  EXPECT_THAT(ledger.suspects(), IsEmpty());
  const std::vector<RoundRecord> three = {rec(0, 1.0), non_finite(1), accused(2, 1.0)};
  ledger.apply_round(three);
  // Rank 1: 3 rounds, rep 1 / 5. Rank 2: rep 1 / 3 but a single round.
  EXPECT_THAT(ledger.suspects(), ElementsAre(1));
}

TEST(LedgerSuspects, ThresholdIsStrictAndOrderAscending) {
  LedgerParams p;
  p.min_rounds = 0;
  p.suspicion_threshold = 0.2;
  Ledger strict(4, p);
  p.suspicion_threshold = 0.21;
  Ledger loose(4, p);
  // Records out of rank order: suspects still come out ascending.
  const std::vector<RoundRecord> round = {non_finite(3), rec(2, 1.0), non_finite(1), rec(0, 1.0)};
  for (int i = 0; i < 3; ++i) {
    strict.apply_round(round);
    loose.apply_round(round);
  }
  // Ranks 1 and 3: alpha 1, beta 4 -> rep 1 / 5 = 0.2, not below 0.2 but below 0.21.
  EXPECT_DOUBLE_EQ(strict.accounts()[1].reputation(), 0.2);
  EXPECT_THAT(strict.suspects(), IsEmpty());
  EXPECT_THAT(loose.suspects(), ElementsAre(1, 3));
}

// ---------------------------------------------------------------- persistent position

RoundRecord at(int rank, double distance, double along) {
  RoundRecord r = rec(rank, distance);
  r.along = along;
  return r;
}

// Rank 3 sits next to the result every round (ALIE's place beside the honest mean), rank 4 pulls
// against it (a sign flip's); both pass the per-round distance test, so only their persistent
// position names them. Honest ranks scatter around closeness 1 and pull 0.
TEST(LedgerPosition, NamesPersistentlyCloseAndPullingRanks) {
  LedgerParams p;
  p.min_rounds = 10;
  Ledger ledger(5, p);
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> spread(0.7, 1.3), side(-0.3, 0.3);
  for (int round = 0; round < 12; ++round) {
    std::vector<RoundRecord> records;
    for (int r = 0; r < 3; ++r) records.push_back(at(r, 10 * spread(gen), 10 * side(gen)));
    records.push_back(at(3, 2.0, 0.1));
    records.push_back(at(4, 12.0, -6.0));
    ledger.apply_round(records);
    for (int r = 0; r < 5; ++r) EXPECT_EQ(ledger.accounts()[r].rejected, 0) << r;
    if (round < 9) {
      EXPECT_THAT(ledger.suspects(), IsEmpty()) << "min_rounds holds them back";
    }
  }
  EXPECT_THAT(ledger.suspects(), ElementsAre(3, 4));
  const auto& acc = ledger.accounts();
  EXPECT_EQ(acc[3].position_mass, 12.0);
  EXPECT_LT(acc[3].mean_closeness(), 0.3);
  EXPECT_LT(acc[4].mean_pull(), -0.4);
  for (int r = 0; r < 3; ++r) {
    EXPECT_NEAR(acc[r].mean_closeness(), 1.0, 0.35) << r;
    EXPECT_NEAR(acc[r].mean_pull(), 0.0, 0.35) << r;
  }
  EXPECT_EQ(ledger.suspicion(acc[3]), "persistently close to the result");
  EXPECT_EQ(ledger.suspicion(acc[4]), "persistently pulls against the result");
  EXPECT_EQ(ledger.suspicion(acc[0]), "");
  EXPECT_THAT(ledger.report(),
              HasSubstr("suspects: rank 3 (?, persistently close to the result), rank 4 (?, "
                        "persistently pulls against the result)\n"));
}

// The position sums: closeness = distance / median distance, pull = (along - median along) /
// median distance, discounted like the reputation; non-finite rounds and a zero median leave them
// alone.
TEST(LedgerPosition, SumsAndForgetting) {
  LedgerParams p;
  p.forgetting = 0.5;
  Ledger ledger(3, p);
  const std::vector<RoundRecord> first = {at(0, 2.0, -1.0), at(1, 4.0, 2.0), at(2, 6.0, 0.0)};
  ledger.apply_round(first);  // median 4
  const std::vector<RoundRecord> second = {at(0, 4.0, 4.0), at(1, 2.0, 0.0), non_finite(2)};
  ledger.apply_round(second);  // median of {4, 2} = 3
  const auto& acc = ledger.accounts();
  EXPECT_DOUBLE_EQ(acc[0].position_mass, 1.5);
  EXPECT_DOUBLE_EQ(acc[0].closeness_sum, 0.5 * 0.5 + 4.0 / 3.0);
  // Pulls from the round's median component along: 0 in the first round, 2 in the second.
  EXPECT_DOUBLE_EQ(acc[0].pull_sum, 0.5 * -0.25 + 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(acc[0].mean_closeness(), (0.25 + 4.0 / 3.0) / 1.5);
  EXPECT_DOUBLE_EQ(acc[2].position_mass, 1.0);  // the non-finite round is no position
  EXPECT_DOUBLE_EQ(acc[2].mean_closeness(), 1.5);
  Ledger zero(2, LedgerParams{});
  const std::vector<RoundRecord> same = {at(0, 0.0, 0.0), at(1, 0.0, 0.0)};
  zero.apply_round(same);
  EXPECT_EQ(zero.accounts()[0].position_mass, 0.0);
  EXPECT_EQ(zero.accounts()[0].mean_closeness(), 1.0);
  EXPECT_EQ(zero.accounts()[0].mean_pull(), 0.0);
}

// Three ranks send one vector (a mimic pair copying honest rank 0): the copies drag the result
// next to them (Krum would select one), but a copy is no evidence against anyone, so none of the
// three is named, they count once in the medians (the honest ranks' pulls stay near 0), and each
// counts the round as a duplicate. A unique contribution next to the result is still named.
TEST(LedgerPosition, CopiesAreNoEvidence) {
  LedgerParams p;
  p.min_rounds = 5;
  Ledger ledger(8, p);
  std::mt19937 gen(11);
  std::uniform_real_distribution<double> spread(0.8, 1.2), side(-0.2, 0.2);
  for (int round = 0; round < 20; ++round) {
    std::vector<RoundRecord> records;
    const RoundRecord copy = at(0, 1.0, 4.0);  // close, and pulling the result its way
    for (int r : {0, 3, 6}) {
      RoundRecord c = copy;
      c.rank = r;
      records.push_back(c);
    }
    for (int r : {1, 2, 4, 5}) records.push_back(at(r, 10 * spread(gen), 10 * side(gen)));
    records.push_back(at(7, 2.0, 0.0));  // unique and next to the result: ALIE alone
    ledger.apply_round(records);
  }
  EXPECT_THAT(ledger.suspects(), ElementsAre(7));
  const auto& acc = ledger.accounts();
  for (int r : {0, 3, 6}) {
    EXPECT_EQ(acc[r].duplicates, 20) << r;
    EXPECT_EQ(acc[r].position_mass, 0.0) << r;
  }
  for (int r : {1, 2, 4, 5}) {
    EXPECT_EQ(acc[r].duplicates, 0) << r;
    EXPECT_NEAR(acc[r].mean_pull(), 0.0, 0.25) << r;
  }
}

// ---------------------------------------------------------------- report

TEST(LedgerReport, LinesAndSuspects) {
  LedgerParams p;
  p.min_rounds = 0;
  Ledger ledger(2, p);
  ledger.set_host(0, "node01");
  ledger.set_host(1, "node07");
  const std::vector<RoundRecord> round = {rec(0, 0.0, 100, 1.0), non_finite(1, 50)};
  ledger.apply_round(round);
  // Rank 0: median {0} = 0, accepted; rep 2/3; reward 1e-3 * 100 * 2/3 + 1 * 1 * 2 = 2.06667.
  // Rank 1: rep 1/3; reward 1e-3 * 50 * 1/3 = 0.0166667; no finite round, no mean distance.
  EXPECT_EQ(ledger.report(),
            "rank 0 (node01): reputation 0.667, accepted 1 of 1 rounds, rejected 0 (non-finite 0, "
            "accused 0), samples 100, reward 2.06667, mean distance 0, closeness 1, pull +0, "
            "duplicates 0\n"
            "rank 1 (node07): reputation 0.333, accepted 0 of 1 rounds, rejected 1 (non-finite 1, "
            "accused 0), samples 50, reward 0.0166667, mean distance n/a, closeness 1, pull +0, "
            "duplicates 0\n"
            "suspects: rank 1 (node07, rejected in most rounds)\n");
  ledger.set_quarantined(1);
  EXPECT_THAT(ledger.report(), HasSubstr("duplicates 0, quarantined\n"));
}

TEST(LedgerReport, UnknownHostAndNoSuspects) {
  Ledger ledger(3, LedgerParams{});
  ledger.set_host(0, "node01");
  ledger.set_host(1, "node02");
  const std::vector<RoundRecord> round = {rec(0, 1.0), rec(1, 2.0), rec(2, 3.0)};
  ledger.apply_round(round);
  const std::string report = ledger.report();
  EXPECT_THAT(report, HasSubstr("rank 0 (node01): "));
  EXPECT_THAT(report, HasSubstr("rank 1 (node02): "));
  EXPECT_THAT(report, HasSubstr("rank 2 (?): "));
  EXPECT_THAT(report, HasSubstr("mean distance 2, "));  // rank 1: 2 / 1
  EXPECT_THAT(report, HasSubstr("\nsuspects: none\n"));
}

// ---------------------------------------------------------------- errors

TEST(LedgerErrors, ParamsNameTheKey) {
  auto with = [](auto set) {
    LedgerParams p;
    set(p);
    return config_error_of([&] { check_ledger_params(p); });
  };
  EXPECT_EQ(with([](LedgerParams& p) { p.forgetting = 1.5; }),
            "config: [ledger] forgetting = 1.5 must be in (0, 1]");
  EXPECT_THAT(with([](LedgerParams& p) { p.forgetting = 0.0; }),
              HasSubstr("[ledger] forgetting = 0 "));
  EXPECT_THAT(with([](LedgerParams& p) { p.distance_ratio = 0.0; }),
              HasSubstr("[ledger] distance_ratio = 0 must be"));
  EXPECT_THAT(with([](LedgerParams& p) { p.distance_ratio = kNaN; }),
              HasSubstr("[ledger] distance_ratio = nan must be"));
  EXPECT_THAT(with([](LedgerParams& p) { p.suspicion_threshold = 1.25; }),
              HasSubstr("[ledger] suspicion_threshold = 1.25 must be in [0, 1]"));
  EXPECT_THAT(with([](LedgerParams& p) { p.min_rounds = -1; }),
              HasSubstr("[ledger] min_rounds = -1 must be >= 0"));
  EXPECT_THAT(with([](LedgerParams& p) { p.reward_per_sample = -0.5; }),
              HasSubstr("[ledger] reward_per_sample = -0.5 must be"));
  EXPECT_THAT(with([](LedgerParams& p) { p.quality_bonus = -1.0; }),
              HasSubstr("[ledger] quality_bonus = -1 must be"));
  EXPECT_THAT(with([](LedgerParams& p) { p.closeness_bound = 1.5; }),
              HasSubstr("[ledger] closeness_bound = 1.5 must be in [0, 1]"));
  EXPECT_THAT(with([](LedgerParams& p) { p.pull_bound = 0.0; }),
              HasSubstr("[ledger] pull_bound = 0 must be finite and > 0"));
  EXPECT_THAT(with([](LedgerParams& p) { p.pull_bound = kInf; }),
              HasSubstr("[ledger] pull_bound = inf must be"));
  EXPECT_NO_THROW(check_ledger_params(LedgerParams{}));

  LedgerParams bad;
  bad.forgetting = 2.0;
  EXPECT_THROW(Ledger(2, bad), daa::ConfigError);
}

TEST(LedgerErrors, RankOutsideTheWorld) {
  Ledger ledger(4, LedgerParams{});
  const std::vector<RoundRecord> high = {rec(0, 1.0), rec(4, 1.0)};
  const std::string msg = error_of([&] { ledger.apply_round(high); });
  EXPECT_THAT(msg, HasSubstr("rank 4"));
  EXPECT_THAT(msg, HasSubstr("4 ranks"));
  const std::vector<RoundRecord> negative = {rec(-1, 1.0)};
  EXPECT_THAT(error_of([&] { ledger.apply_round(negative); }), HasSubstr("rank -1"));
  EXPECT_THAT(error_of([&] { ledger.set_host(7, "x"); }), HasSubstr("rank 7"));
  EXPECT_THAT(error_of([&] { ledger.set_quarantined(4); }), HasSubstr("rank 4"));
  // Rank 0 came first in the bad round, yet nothing was applied.
  EXPECT_EQ(ledger.accounts()[0].rounds, 0);
}

TEST(LedgerErrors, DuplicateRankInARound) {
  Ledger ledger(4, LedgerParams{});
  const std::vector<RoundRecord> round = {rec(2, 1.0), rec(1, 1.0), rec(2, 3.0)};
  EXPECT_THAT(error_of([&] { ledger.apply_round(round); }), HasSubstr("rank 2 appears twice"));
  EXPECT_EQ(ledger.accounts()[1].rounds, 0);
  EXPECT_EQ(ledger.accounts()[2].rounds, 0);
}

// ---------------------------------------------------------------- wire format

TEST(LedgerSerialization, RoundTrip) {
  RoundRecord odd = non_finite(7, 12.5);
  odd.accused = true;
  RoundRecord along = rec(1, 1e300, 0, -0.0);
  along.along = -3.5;
  const std::vector<RoundRecord> records = {rec(0, 1.25, 64, 0.125), odd, excluded(3, 0.0, 8),
                                            along};
  const std::vector<RoundRecord> back = deserialize_records(serialize_records(records));
  ASSERT_EQ(back.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) expect_same_record(back[i], records[i]);
  EXPECT_THAT(deserialize_records(serialize_records({})), IsEmpty());
}

TEST(LedgerSerialization, GarbageIsAnError) {
  EXPECT_THAT(error_of([] { deserialize_records("this is not a batch of round records"); }),
              HasSubstr("cannot decode"));
  EXPECT_THAT(error_of([] { deserialize_records(""); }), HasSubstr("cannot decode"));
  const std::string bytes = serialize_records({rec(0, 1.0), rec(1, 2.0)});
  EXPECT_THAT(error_of([&] { deserialize_records(bytes.substr(0, bytes.size() - 1)); }),
              HasSubstr("cannot decode"));
  EXPECT_THAT(error_of([&] { deserialize_records(bytes + "x"); }), HasSubstr("trailing bytes"));
}

// ---------------------------------------------------------------- determinism

// Rounds of every kind of record, from a fixed seed.
std::vector<std::vector<RoundRecord>> random_rounds(int world, int count) {
  std::mt19937_64 gen(20240611);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<std::vector<RoundRecord>> rounds;
  for (int k = 0; k < count; ++k) {
    std::vector<RoundRecord> round;
    for (int r = 0; r < world; ++r) {
      const double u = unit(gen);
      if (u < 0.1) continue;  // not in this round's group
      RoundRecord x = rec(r, unit(gen) * (r == 5 ? 40.0 : 4.0), 1 + 100 * unit(gen), unit(gen));
      if (u < 0.15) x = non_finite(r, 32);
      if (u > 0.95) x.accused = true;
      if (r == 6 && k > count / 2) x = excluded(r, 0.1);
      round.push_back(x);
    }
    rounds.push_back(round);
  }
  return rounds;
}

TEST(LedgerDeterminism, SameRoundsGiveBitIdenticalAccounts) {
  LedgerParams p;
  p.forgetting = 0.9;
  p.min_rounds = 5;
  const int world = 8;
  Ledger a(world, p);
  Ledger b(world, p);
  Ledger reversed(world, p);  // the same rounds, records of each round in reverse order
  for (const auto& round : random_rounds(world, 60)) {
    a.apply_round(round);
    b.apply_round(round);
    const std::vector<RoundRecord> rev(round.rbegin(), round.rend());
    reversed.apply_round(rev);
  }
  for (int r = 0; r < world; ++r) {
    expect_same_account(a.accounts()[r], b.accounts()[r]);
    expect_same_account(a.accounts()[r], reversed.accounts()[r]);
  }
  EXPECT_EQ(a.report(), b.report());
  EXPECT_EQ(a.suspects(), reversed.suspects());
  EXPECT_GT(a.accounts()[0].rounds, 40);  // the rounds really did something
}

}  // namespace
