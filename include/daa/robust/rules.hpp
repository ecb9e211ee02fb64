// The Byzantine-robust aggregation rules of DESIGN.md §6 as a pure host library: n contributions
// of d values in, one aggregate out. No MPI here; the collective rounds (replicated or sharded)
// call into these functions so that every honest rank computes the same result bit for bit.
#pragma once

#include <span>
#include <string>
#include <vector>

namespace daa::robust {

// Definitions and tie-breaks (n contributions x_0..x_{n-1} of d values each, f tolerated):
// - mean: (1/n) sum_i x_i, summed in ascending index. Ignores f; a NaN/Inf row poisons it (by
//   design: it is the non-robust baseline).
// - median: per coordinate, the median of the n values; even n: the mean of the two middle ones.
// - trimmed_mean: per coordinate, drop the f largest and f smallest values, average the rest
//   (summed in ascending value order).
// - geometric_median: smoothed Weiszfeld started at the coordinate-wise median:
//   z <- sum_i w_i x_i / sum_i w_i with w_i = 1 / max(nu, ||x_i - z||); stops after
//   `weiszfeld_iterations` steps or once a step moves z by at most `weiszfeld_tolerance`
//   (Euclidean, absolute).
// - krum (Blanchard et al. 2017): score(i) = sum of the squared distances from x_i to its
//   n - f - 2 nearest other contributions; the result is the x_i with the smallest score.
// - multi_krum: the mean of the m contributions with the smallest Krum scores (m =
//   `multi_krum_m`, 0 meaning n - f; 1 <= m <= n - f).
// - bulyan (El Mhamdi et al. 2018): select theta = n - 2f contributions by iterated Krum (pick by
//   Krum among the k remaining, scoring with the k - f - 2 nearest, remove, repeat), then per
//   coordinate average the beta = theta - 2f selected values closest to the coordinate-wise
//   median of the selected ones. Note: the last Krum steps run on k = 2f + 1 rows with f - 1
//   neighbours, so they tie structurally (f = 1: every score is 0; f = 2: the mutual-nearest pair);
//   the lowest index wins, which makes the selection (not only exact-tie cases) depend on the
//   order of the rows, and lets f colocated finite attackers put one of them into the selection
//   (the beta-closest-to-median step then keeps it out of every coordinate's average).
// - centered_clipping (Karimireddy et al. 2021): v starts at the coordinate-wise median; repeat
//   `clip_iterations` times: v <- v + (1/n) sum_i (x_i - v) min(1, tau / ||x_i - v||).
// - nnm (Allouah et al. 2023), a pre-step for any rule: each x_i is replaced by the mean of its
//   n - f nearest contributions (itself included, Euclidean), then the rule runs on the mixed rows.
//
// Ties: every selection sort is stable and keyed on (value, index), so ties break towards the
// lowest index (DESIGN.md §6: all ranks choose alike). Sums over rows run in ascending index order;
// distances come from the Gram matrix of the rows, <x_a, x_b> summed over coordinates in order
// (src/robust/round_engine.hpp: the same phases run on one host and in the collective rounds).
//
// Non-finite values (NaN/Inf): a row with any non-finite value is "bad" and must never reach the
// result. Coordinate-wise rules drop non-finite values per coordinate: with m of them at a
// coordinate, the median is that of the n - m finite values, and the trimmed mean trims
// max(0, f - m) from the bottom and keeps at most n - f values (the dropped ones count as trimmed
// from the top), so with m <= f it is the trimmed mean of the finite values with f - m trimmed
// from each side; a NaN then costs what a missing value would, and shifts no order statistic.
// Distance-based rules give a bad row infinite distance to every other row: Krum, Multi-Krum,
// Bulyan never select it; Weiszfeld, clipping and NNM give it weight zero (in centered clipping
// it counts in the 1/n as a zero step, as if clipped to nothing; under NNM a bad row stays bad).
// If every row is bad, distance-based rules return a vector of NaN (the caller's divergence check
// then fires) rather than inventing a value.
enum class Rule {
  mean,
  median,
  trimmed_mean,
  geometric_median,
  krum,
  multi_krum,
  bulyan,
  centered_clipping
};

// "mean", "median", "trimmed-mean", "geometric-median", "krum", "multi-krum", "bulyan",
// "centered-clipping". An unknown name throws daa::ConfigError listing the known ones.
Rule parse_rule(const std::string& name);
const char* to_string(Rule rule);

struct RuleParams {
  int f = 0;                       // tolerated Byzantine contributions
  int multi_krum_m = 0;            // Multi-Krum: how many to average; 0 means n - f
  double clip_tau = 1.0;           // centered clipping radius (> 0)
  int clip_iterations = 3;         // centered clipping iterations, from the coordinate-wise median
  int weiszfeld_iterations = 100;  // geometric median (smoothed Weiszfeld)
  double weiszfeld_nu = 1e-6;      // smoothing (> 0)
  double weiszfeld_tolerance = 1e-9;
  bool nnm = false;  // nearest-neighbour mixing pre-step (Allouah et al. 2023)
};

// Throws daa::ConfigError naming the rule, the group, n and f when a group of n contributions
// cannot tolerate f with this rule: median, trimmed mean, geometric median, centered clipping need
// n > 2f; krum, multi-krum n >= 2f + 3; bulyan n >= 4f + 3; mean any n >= 1. f < 0 is an error
// for every rule.
void check_requirement(Rule rule, int n, int f, const std::string& group);

// What each contribution weighed in the result, each in [0, 1]:
// mean 1/n; median: fraction of coordinates where its value lies between the two middle values
// (odd n: equals the median; rows tied with them count too); trimmed mean: fraction of coordinates
// where its value lies between the smallest and largest kept values; krum 1 for the chosen one, 0
// otherwise; multi-krum 1/m for each selected one; bulyan: fraction of coordinates where it was
// among the beta averaged values; geometric median: its final Weiszfeld weight, normalized to sum
// 1; centered clipping: its clip factor in the last iteration (0 for a bad row). With nnm the
// weights refer to the mixed rows.
struct RuleOutcome {
  std::vector<double> weight;
};

// Throws daa::ConfigError naming the rule and the parameter when `params` are invalid for a group
// of n contributions (multi-krum m outside [0, n - f], clip tau <= 0, negative iterations, ...).
void check_params(Rule rule, int n, const RuleParams& params);

// rows: n contributions of d values, row-major (rows.size() == n * d). Calls check_requirement
// with group "aggregate"; invalid params throw daa::ConfigError. Returns the d aggregated values.
std::vector<double> aggregate(Rule rule, std::span<const double> rows, int n, int d,
                              const RuleParams& params, RuleOutcome* outcome = nullptr);

}  // namespace daa::robust
