// The contribution ledger (see daa/robust/ledger.hpp for the spec). Every rank applies the same
// rounds in the same order, so nothing here may depend on the order of records within a round,
// on the host, or on anything but the records themselves: that keeps the ledgers bit-identical.
#include "daa/robust/ledger.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <iterator>

#include "daa/core/error.hpp"
#include "daa/parallel/exchange.hpp"

namespace daa::robust {
namespace {

// A distance the caller forgot to flag is still no evidence of closeness: +inf or NaN counts as
// non-finite everywhere (judging, the non-finite count and the distance sum alike).
bool finite_record(const RoundRecord& r) {
  return !r.non_finite && std::isfinite(r.distance);
}

// The median of `field` over the round's non-excluded finite records (of those with `use[i]` set,
// when `use` is given); sorting makes it independent of the order the records came in.
double median_of(std::span<const RoundRecord> records, double RoundRecord::*field,
                 const std::vector<char>* use = nullptr) {
  std::vector<double> d;
  d.reserve(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    const RoundRecord& r = records[i];
    if (use && !(*use)[i]) continue;
    if (!r.excluded && finite_record(r) && std::isfinite(r.*field)) d.push_back(r.*field);
  }
  if (d.empty()) return 0.0;  // nothing finite: every record is rejected anyway
  std::sort(d.begin(), d.end());
  const size_t m = d.size();
  return m % 2 == 1 ? d[m / 2] : 0.5 * (d[m / 2 - 1] + d[m / 2]);
}

bool same_position(const RoundRecord& a, const RoundRecord& b) {
  return std::bit_cast<std::uint64_t>(a.distance) == std::bit_cast<std::uint64_t>(b.distance) &&
         std::bit_cast<std::uint64_t>(a.along) == std::bit_cast<std::uint64_t>(b.along);
}

// Per record: `duplicate`, a finite, non-excluded contribution at exactly the position of another
// one; `representative`, not a later copy of an earlier record (each position counts once).
struct Copies {
  std::vector<char> duplicate, representative;
};
Copies copies_of(std::span<const RoundRecord> records) {
  Copies c{std::vector<char>(records.size(), 0), std::vector<char>(records.size(), 1)};
  for (std::size_t i = 0; i < records.size(); ++i)
    for (std::size_t k = i + 1; k < records.size(); ++k) {
      const RoundRecord &a = records[i], &b = records[k];
      if (a.excluded || b.excluded || !finite_record(a) || !finite_record(b)) continue;
      if (!same_position(a, b)) continue;
      c.duplicate[i] = c.duplicate[k] = 1;
      c.representative[k] = 0;
    }
  return c;
}

[[noreturn]] void bad_param(const char* key, const std::string& value, const char* range) {
  throw ConfigError(fmt::format("[ledger] {} = {} must be {}", key, value, range));
}

void check_rank(int rank, size_t world_size) {
  if (rank < 0 || static_cast<size_t>(rank) >= world_size) {
    throw Error(fmt::format("robust::Ledger: rank {} is outside the world of {} ranks [0, {})",
                            rank, world_size, world_size));
  }
}

std::string host_or_unknown(const std::string& host) {
  return host.empty() ? "?" : host;
}

}  // namespace

double RankAccount::reputation() const {
  const double alpha = 1.0 + accepted_mass;
  const double beta = 1.0 + rejected_mass;
  return alpha / (alpha + beta);
}

double RankAccount::mean_closeness() const {
  return position_mass > 0 ? closeness_sum / position_mass : 1.0;
}

double RankAccount::mean_pull() const {
  return position_mass > 0 ? pull_sum / position_mass : 0.0;
}

void check_ledger_params(const LedgerParams& p) {
  // Written as !(x in range) so that NaN fails every check.
  if (!(p.distance_ratio > 0.0 && std::isfinite(p.distance_ratio))) {
    bad_param("distance_ratio", fmt::format("{}", p.distance_ratio), "finite and > 0");
  }
  if (!(p.forgetting > 0.0 && p.forgetting <= 1.0)) {
    bad_param("forgetting", fmt::format("{}", p.forgetting), "in (0, 1]");
  }
  if (!(p.suspicion_threshold >= 0.0 && p.suspicion_threshold <= 1.0)) {
    bad_param("suspicion_threshold", fmt::format("{}", p.suspicion_threshold), "in [0, 1]");
  }
  if (!(p.closeness_bound >= 0.0 && p.closeness_bound <= 1.0)) {
    bad_param("closeness_bound", fmt::format("{}", p.closeness_bound), "in [0, 1]");
  }
  if (!(p.pull_bound > 0.0 && std::isfinite(p.pull_bound))) {
    bad_param("pull_bound", fmt::format("{}", p.pull_bound), "finite and > 0");
  }
  if (p.min_rounds < 0) bad_param("min_rounds", std::to_string(p.min_rounds), ">= 0");
  if (!(p.reward_per_sample >= 0.0 && std::isfinite(p.reward_per_sample))) {
    bad_param("reward_per_sample", fmt::format("{}", p.reward_per_sample), "finite and >= 0");
  }
  if (!(p.quality_bonus >= 0.0 && std::isfinite(p.quality_bonus))) {
    bad_param("quality_bonus", fmt::format("{}", p.quality_bonus), "finite and >= 0");
  }
}

std::vector<char> judge_round(std::span<const RoundRecord> records, const LedgerParams& params) {
  // With a median of 0 (identical contributions) the bound is 0 and only distance 0 passes.
  const double bound = params.distance_ratio * median_of(records, &RoundRecord::distance);
  std::vector<char> accepted(records.size(), 0);
  for (size_t i = 0; i < records.size(); ++i) {
    const RoundRecord& r = records[i];
    accepted[i] = !r.excluded && !r.accused && finite_record(r) && r.distance <= bound;
  }
  return accepted;
}

Ledger::Ledger(int world_size, const LedgerParams& params) : params_(params) {
  check_ledger_params(params_);
  if (world_size < 1) {
    throw Error(fmt::format("robust::Ledger: world size {} must be >= 1", world_size));
  }
  accounts_.resize(static_cast<size_t>(world_size));
  for (int r = 0; r < world_size; ++r) accounts_[r].rank = r;
}

void Ledger::set_host(int rank, const std::string& host) {
  check_rank(rank, accounts_.size());
  accounts_[rank].host = host;
}

void Ledger::set_quarantined(int rank) {
  check_rank(rank, accounts_.size());
  accounts_[rank].quarantined = true;
}

void Ledger::apply_round(std::span<const RoundRecord> records) {
  // Validate everything before touching an account, so a bad round leaves the ledger as it was
  // (and therefore still equal to every other rank's).
  std::vector<char> seen(accounts_.size(), 0);
  for (const RoundRecord& r : records) {
    check_rank(r.rank, accounts_.size());
    if (seen[r.rank]) {
      throw Error(fmt::format("robust::Ledger: rank {} appears twice in one round", r.rank));
    }
    seen[r.rank] = 1;
  }

  const std::vector<char> accepted = judge_round(records, params_);
  // Contributions that are copies of each other (bit-identical distance and along: honest ranks
  // with their own data never send the same vector) are no position evidence: a copy of an honest
  // contribution (mimicry) is indistinguishable from the original, and the copies' weight drags
  // the result towards them (Krum selects them), so judging them would name the honest original.
  // They count once in the round's medians and are counted per rank as duplicates.
  const Copies copies = copies_of(records);
  const std::vector<char>& duplicate = copies.duplicate;
  // Position evidence is relative to the round: a result that carries noise no honest rank
  // shares (left over from an attacker, or from a small group) shifts every honest rank's
  // component along it alike, so the pull is measured from the round's median component.
  const double median = median_of(records, &RoundRecord::distance, &copies.representative);
  const double median_along = median_of(records, &RoundRecord::along, &copies.representative);
  // The even share of a round is 1 / members, so weight * members is 1 for an even contribution.
  const auto members = static_cast<double>(std::count_if(
      records.begin(), records.end(), [](const RoundRecord& r) { return !r.excluded; }));

  for (size_t i = 0; i < records.size(); ++i) {
    const RoundRecord& r = records[i];
    RankAccount& a = accounts_[r.rank];
    if (r.excluded) {
      // A quarantined rank sits out: its round is no evidence either way, so it counts as no
      // round at all (rounds, accepted/rejected, accusations, samples and reputation stay as
      // they are) and earns nothing; it merely stays quarantined.
      a.quarantined = true;
      continue;
    }
    const bool ok = accepted[i] != 0;
    const bool finite = finite_record(r);
    a.rounds += 1;
    a.accepted += ok ? 1 : 0;
    a.rejected += ok ? 0 : 1;
    a.accusations += r.accused ? 1 : 0;
    a.non_finite += finite ? 0 : 1;
    a.samples += r.samples;
    a.weight_sum += r.weight;
    if (finite) a.distance_sum += r.distance;
    a.duplicates += duplicate[i] ? 1 : 0;
    if (finite && !duplicate[i] && median > 0 && std::isfinite(r.along)) {
      a.position_mass = params_.forgetting * a.position_mass + 1.0;
      a.closeness_sum = params_.forgetting * a.closeness_sum + r.distance / median;
      a.pull_sum = params_.forgetting * a.pull_sum + (r.along - median_along) / median;
    }
    // Forget first, then count this round at full weight.
    a.accepted_mass *= params_.forgetting;
    a.rejected_mass *= params_.forgetting;
    (ok ? a.accepted_mass : a.rejected_mass) += 1.0;
    double reward = params_.reward_per_sample * r.samples * a.reputation();
    if (ok) reward += params_.quality_bonus * r.weight * members;
    a.reward += reward;
  }
}

void Ledger::restore_accounts(std::vector<RankAccount> accounts) {
  if (accounts.size() != accounts_.size())
    throw Error(fmt::format("robust::Ledger::restore_accounts: {} accounts for a world of {} ranks",
                            accounts.size(), accounts_.size()));
  for (std::size_t r = 0; r < accounts.size(); ++r)
    if (accounts[r].rank != int(r))
      throw Error(fmt::format("robust::Ledger::restore_accounts: account {} is for rank {}", r,
                              accounts[r].rank));
  accounts_ = std::move(accounts);
}

std::string Ledger::suspicion(const RankAccount& a) const {
  if (a.rounds < params_.min_rounds) return "";
  if (a.reputation() < params_.suspicion_threshold) return "rejected in most rounds";
  if (a.position_mass > 0 && a.mean_closeness() < params_.closeness_bound)
    return "persistently close to the result";
  if (a.position_mass > 0 && a.mean_pull() < -params_.pull_bound)
    return "persistently pulls against the result";
  return "";
}

std::vector<int> Ledger::suspects() const {
  std::vector<int> out;
  for (const RankAccount& a : accounts_)
    if (!suspicion(a).empty()) out.push_back(a.rank);
  return out;
}

std::string Ledger::report() const {
  std::string out;
  auto it = std::back_inserter(out);
  for (const RankAccount& a : accounts_) {
    // The finite rounds are exactly those whose distance went into distance_sum.
    const std::int64_t finite_rounds = a.rounds - a.non_finite;
    const std::string mean_distance =
        finite_rounds > 0
            ? fmt::format("{:.4g}", a.distance_sum / static_cast<double>(finite_rounds))
            : "n/a";
    fmt::format_to(it,
                   "rank {} ({}): reputation {:.3f}, accepted {} of {} rounds, rejected {} "
                   "(non-finite {}, accused {}), samples {:.6g}, reward {:.6g}, mean distance {}, "
                   "closeness {:.3g}, pull {:+.3g}, duplicates {}{}\n",
                   a.rank, host_or_unknown(a.host), a.reputation(), a.accepted, a.rounds,
                   a.rejected, a.non_finite, a.accusations, a.samples, a.reward, mean_distance,
                   a.mean_closeness(), a.mean_pull(), a.duplicates,
                   a.quarantined ? ", quarantined" : "");
  }
  const std::vector<int> s = suspects();
  out += "suspects: ";
  if (s.empty()) out += "none";
  for (size_t i = 0; i < s.size(); ++i) {
    fmt::format_to(it, "{}rank {} ({}, {})", i > 0 ? ", " : "", s[i],
                   host_or_unknown(accounts_[s[i]].host), suspicion(accounts_[s[i]]));
  }
  out += '\n';
  return out;
}

std::string serialize_records(const std::vector<RoundRecord>& records) {
  return parallel::to_bytes(records);
}

std::vector<RoundRecord> deserialize_records(const std::string& bytes) {
  return parallel::from_bytes<std::vector<RoundRecord>>(bytes, "robust::deserialize_records");
}

}  // namespace daa::robust
