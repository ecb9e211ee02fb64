// The robust all-reduce over MPI_COMM_WORLD: replicated and sharded mode give the same bits on
// every rank, agree with the host rules, keep NaN and huge contributions out, leave excluded
// members out, and in sharded mode a lying chunk holder is caught, recomputed around and accused,
// with or without the per-row report a ledger reads.
// Run with 1, 2 and 4 ranks (rules whose requirement the world size cannot meet are skipped by
// name in the loop, never silently: the loop asserts that at least one rule ran).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/robust/allreduce.hpp"

namespace {

using daa::parallel::Communicator;
using daa::robust::Mode;
using daa::robust::RobustAllReduce;
using daa::robust::RoundOptions;
using daa::robust::RoundReport;
using daa::robust::Rule;
using daa::robust::RuleParams;

const Communicator& world() {
  static const Communicator comm(MPI_COMM_WORLD, "world");
  return comm;
}

// Rank r's contribution: a shared direction plus rank-specific noise, d values.
std::vector<float> contribution(int rank, std::size_t d, std::uint64_t salt) {
  std::vector<float> v(d);
  for (std::size_t j = 0; j < d; ++j)
    v[j] = float(0.5 * daa::core::counter_normal(7, daa::core::RngPurpose::test, salt, j) +
                 0.1 * daa::core::counter_normal(7, daa::core::RngPurpose::test,
                                                 salt + 1000 + std::uint64_t(rank), j));
  return v;
}

// Every rank's vector, gathered (n x d).
std::vector<float> gather(const std::vector<float>& v) {
  std::vector<float> all(v.size() * std::size_t(world().size()));
  MPI_Allgather(v.data(), int(v.size()), MPI_FLOAT, all.data(), int(v.size()), MPI_FLOAT,
                MPI_COMM_WORLD);
  return all;
}

bool identical_on_all_ranks(const std::vector<float>& v) {
  const std::vector<float> all = gather(v);
  for (int r = 1; r < world().size(); ++r)
    if (std::memcmp(all.data(), all.data() + std::size_t(r) * v.size(), v.size() * sizeof(float)))
      return false;
  return true;
}

// Largest f the world size allows for the rule (0 if even f = 0 is impossible: then -1).
int largest_f(Rule rule, int n) {
  for (int f = n; f >= 0; --f) {
    try {
      daa::robust::check_requirement(rule, n, f, "test");
      return f;
    } catch (const daa::ConfigError&) {
    }
  }
  return -1;
}

const Rule kRules[] = {Rule::mean, Rule::median,     Rule::trimmed_mean, Rule::geometric_median,
                       Rule::krum, Rule::multi_krum, Rule::bulyan,       Rule::centered_clipping};

TEST(RobustAllReduce, ShardedAndReplicatedAgreeBitForBitAndMatchTheHostRule) {
  const int n = world().size();
  const std::size_t d = 1003;  // not a multiple of n: chunks of unequal size
  int ran = 0, sharded_cases = 0, fallback_cases = 0;
  for (Rule rule : kRules)
    for (bool nnm : {false, true}) {
      const int f = largest_f(rule, n);
      if (f < 0) continue;  // e.g. Krum needs 3 ranks
      RuleParams p;
      p.f = f;
      p.nnm = nnm;
      p.clip_tau = 0.5;
      SCOPED_TRACE(std::string(daa::robust::to_string(rule)) + (nnm ? " + nnm" : "") +
                   ", f = " + std::to_string(f));
      const std::vector<float> mine = contribution(world().rank(), d, 1);
      std::vector<float> replicated = mine, sharded = mine;
      const RoundReport rr = RobustAllReduce(rule, p, Mode::replicated).reduce(replicated, world());
      const RobustAllReduce sharded_round(rule, p, Mode::sharded);
      // With as many chunk holders as ranks, sharded mode is replicated mode (every rank holds
      // every chunk): on 1 and 2 ranks this case then checks that fallback, from 4 ranks on the
      // sharded path itself.
      ++(sharded_round.holders(n) < n ? sharded_cases : fallback_cases);
      const RoundReport rs = sharded_round.reduce(sharded, world());
      ASSERT_EQ(std::memcmp(replicated.data(), sharded.data(), d * sizeof(float)), 0);
      EXPECT_TRUE(identical_on_all_ranks(sharded));
      EXPECT_EQ(rr.weight, rs.weight);
      EXPECT_EQ(rr.distance, rs.distance);
      EXPECT_EQ(rr.along, rs.along);
      EXPECT_EQ(rs.disputed_chunks, 0);
      for (char a : rs.accused) EXPECT_EQ(a, 0);
      // Without a ledger to report to: the same bits, no per-row report.
      RoundOptions unreported;
      unreported.report_rows = false;
      std::vector<float> quiet = mine;
      const RoundReport rq = sharded_round.reduce(quiet, world(), unreported);
      ASSERT_EQ(std::memcmp(quiet.data(), sharded.data(), d * sizeof(float)), 0);
      EXPECT_TRUE(rq.weight.empty() && rq.distance.empty() && rq.along.empty() &&
                  rq.non_finite.empty());
      EXPECT_EQ(rq.disputed_chunks, 0);
      const std::vector<float> all = gather(mine);
      // The distances, accumulated block by block in the rule's pass, against a plain sum (their
      // summation orders differ, hence the tolerance).
      for (int i = 0; i < n; ++i) {
        double sum = 0;
        for (std::size_t j = 0; j < d; ++j) {
          const double t = double(all[std::size_t(i) * d + j]) - double(sharded[j]);
          sum += t * t;
        }
        EXPECT_NEAR(rs.distance[std::size_t(i)], std::sqrt(sum), 1e-9 * std::sqrt(sum)) << i;
      }
      // The component along the result, (<x_i, r> - <r, r>) / |r|, against plain sums.
      double norm_sq = 0;
      for (std::size_t j = 0; j < d; ++j) norm_sq += double(sharded[j]) * double(sharded[j]);
      for (int i = 0; i < n; ++i) {
        double inner = 0;
        for (std::size_t j = 0; j < d; ++j)
          inner += double(all[std::size_t(i) * d + j]) * double(sharded[j]);
        if (norm_sq == 0) {
          EXPECT_EQ(rs.along[std::size_t(i)], 0.0) << i;
          continue;
        }
        const double along = (inner - norm_sq) / std::sqrt(norm_sq);
        EXPECT_NEAR(rs.along[std::size_t(i)], along,
                    1e-9 * (std::abs(inner) + norm_sq) / std::sqrt(norm_sq))
            << i;
      }
      // The host rule on the gathered rows (one chunk, so sums differ only by rounding).
      const std::vector<double> rows(all.begin(), all.end());
      const std::vector<double> host = daa::robust::aggregate(rule, rows, n, int(d), p);
      for (std::size_t j = 0; j < d; ++j)
        ASSERT_NEAR(sharded[j], host[j], 1e-5 * (1 + std::abs(host[j]))) << "coordinate " << j;
      ++ran;
    }
  EXPECT_GT(ran, 0);
  if (n >= 4) {
    EXPECT_GT(sharded_cases, 0) << "no case took the sharded path on " << n << " ranks";
  } else {
    EXPECT_EQ(sharded_cases, 0) << "expected the replicated fallback on " << n << " ranks";
  }
  RecordProperty("sharded_cases", sharded_cases);
  RecordProperty("fallback_cases", fallback_cases);
}

TEST(RobustAllReduce, NonFiniteAndHugeContributionsStayOut) {
  const int n = world().size();
  if (n < 3) GTEST_SKIP() << "needs 3 ranks for median with f = 1";
  const std::size_t d = 257;
  RuleParams p;
  p.f = 1;
  for (Mode mode : {Mode::replicated, Mode::sharded})
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), 1e30f}) {
      std::vector<float> v = contribution(world().rank(), d, 2);
      if (world().rank() == n - 1) std::fill(v.begin(), v.end(), bad);
      const std::vector<float> honest = gather(contribution(world().rank(), d, 2));
      const RoundReport r = RobustAllReduce(Rule::median, p, mode).reduce(v, world());
      for (std::size_t j = 0; j < d; ++j) {
        float lo = honest[j], hi = honest[j];
        for (int i = 0; i < n - 1; ++i) {
          lo = std::min(lo, honest[std::size_t(i) * d + j]);
          hi = std::max(hi, honest[std::size_t(i) * d + j]);
        }
        ASSERT_TRUE(v[j] >= lo && v[j] <= hi) << "coordinate " << j << " = " << v[j];
      }
      EXPECT_EQ(r.non_finite[std::size_t(n - 1)], std::isnan(bad) ? 1 : 0);
      EXPECT_GT(r.distance[std::size_t(n - 1)], 10 * r.distance[0]);
      EXPECT_TRUE(identical_on_all_ranks(v));
    }
}

TEST(RobustAllReduce, ExcludedMembersAreLeftOut) {
  const int n = world().size();
  if (n < 2) GTEST_SKIP() << "needs 2 ranks";
  const std::size_t d = 100;
  std::vector<char> excluded(std::size_t(n), 0);
  excluded[std::size_t(n - 1)] = 1;
  std::vector<float> v = contribution(world().rank(), d, 3);
  if (world().rank() == n - 1) std::fill(v.begin(), v.end(), 1e6f);
  const std::vector<float> all = gather(contribution(world().rank(), d, 3));
  const std::vector<double> rows(all.begin(), all.end() - std::ptrdiff_t(d));
  const std::vector<double> expected = daa::robust::aggregate(Rule::mean, rows, n - 1, int(d), {});
  for (Mode mode : {Mode::replicated, Mode::sharded}) {
    std::vector<float> out = v;
    RoundOptions options;
    options.excluded = excluded;
    const RoundReport r = RobustAllReduce(Rule::mean, {}, mode).reduce(out, world(), options);
    for (std::size_t j = 0; j < d; ++j) ASSERT_NEAR(out[j], expected[j], 1e-6);
    EXPECT_EQ(r.weight[std::size_t(n - 1)], 0.0);
    EXPECT_GT(r.distance[std::size_t(n - 1)], 1e6);
  }
}

TEST(RobustAllReduce, LyingChunkHolderIsCaughtRecomputedAndAccused) {
  const int n = world().size();
  if (n < 2) GTEST_SKIP() << "a lie needs a second holder";
  const std::size_t d = 1001;
  const int liar = n - 1;
  for (Rule rule : {Rule::median, Rule::trimmed_mean, Rule::geometric_median}) {
    if (largest_f(rule, n) < 0) continue;
    RuleParams p;
    p.f = rule == Rule::trimmed_mean ? 0 : largest_f(rule, n);
    SCOPED_TRACE(daa::robust::to_string(rule));
    const RobustAllReduce reduce(rule, p, Mode::sharded);
    std::vector<float> honest = contribution(world().rank(), d, 4), lied = honest;
    reduce.reduce(honest, world());
    RoundOptions options;
    options.lie_as_owner = world().rank() == liar;
    const RoundReport r = reduce.reduce(lied, world(), options);
    // The same lie in a round without a per-row report: caught and accused alike.
    std::vector<float> lied_unreported = contribution(world().rank(), d, 4);
    options.report_rows = false;
    const RoundReport ru = reduce.reduce(lied_unreported, world(), options);
    EXPECT_EQ(ru.disputed_chunks, r.disputed_chunks);
    EXPECT_EQ(ru.accused, r.accused);
    if (world().rank() != liar) {
      EXPECT_EQ(std::memcmp(honest.data(), lied_unreported.data(), d * sizeof(float)), 0);
    }
    if (reduce.holders(n) >= n) {
      // Every rank holds every chunk: the round runs replicated, so there is nothing to lie about.
      EXPECT_EQ(r.disputed_chunks, 0);
      for (int i = 0; i < n; ++i) EXPECT_EQ(r.accused[std::size_t(i)], 0) << i;
      EXPECT_EQ(std::memcmp(honest.data(), lied.data(), d * sizeof(float)), 0);
      continue;
    }
    // The liar holds h chunks (primary of one, verifier of h - 1): all of them get disputed.
    EXPECT_EQ(r.disputed_chunks, reduce.holders(n));
    for (int i = 0; i < n; ++i) EXPECT_EQ(r.accused[std::size_t(i)], i == liar ? 1 : 0) << i;
    if (world().rank() != liar) {
      EXPECT_EQ(std::memcmp(honest.data(), lied.data(), d * sizeof(float)), 0);
    }
  }
}

TEST(RobustAllReduce, AllreduceModeIsThePlainMean) {
  const std::size_t d = 64;
  std::vector<float> v = contribution(world().rank(), d, 5);
  const std::vector<float> all = gather(v);
  RobustAllReduce(Rule::mean, {}, Mode::allreduce).reduce(v, world());
  for (std::size_t j = 0; j < d; ++j) {
    double s = 0;
    for (int i = 0; i < world().size(); ++i) s += all[std::size_t(i) * d + j];
    ASSERT_NEAR(v[j], s / world().size(), 1e-6);
  }
}

TEST(RobustAllReduce, BadSetupsAreRefusedWithTheirNumbers) {
  RuleParams p;
  p.f = 2;
  try {
    RobustAllReduce(Rule::krum, p, Mode::sharded).check_group(6, 0, "data-parallel (stage 0)");
    FAIL() << "krum with n = 6, f = 2 was accepted";
  } catch (const daa::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("n >= 2f+3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("data-parallel (stage 0)"), std::string::npos);
  }
  EXPECT_THROW(RobustAllReduce(Rule::median, {}, Mode::allreduce), daa::ConfigError);
  EXPECT_THROW(daa::robust::parse_mode("ring"), daa::ConfigError);
}

}  // namespace
