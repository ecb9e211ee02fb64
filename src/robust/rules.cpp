// The robust aggregation rules (see daa/robust/rules.hpp for the definitions and tie-breaks).
// Pure host code with a fixed order of every sum and stable sorts, so every rank that runs it on
// the same input gets the same bits.
#include "daa/robust/rules.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "daa/core/error.hpp"

namespace daa::robust {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct RuleName {
  Rule rule;
  const char* name;
};
constexpr RuleName kRuleNames[] = {
    {Rule::mean, "mean"},
    {Rule::median, "median"},
    {Rule::trimmed_mean, "trimmed-mean"},
    {Rule::geometric_median, "geometric-median"},
    {Rule::krum, "krum"},
    {Rule::multi_krum, "multi-krum"},
    {Rule::bulyan, "bulyan"},
    {Rule::centered_clipping, "centered-clipping"},
};

// Row-major view of n rows of d values with the per-row "bad" (non-finite) flag.
struct Rows {
  std::span<const double> v;
  int n;
  int d;
  std::vector<char> bad;
  double at(int i, int j) const { return v[static_cast<size_t>(i) * d + j]; }
  const double* row(int i) const { return v.data() + static_cast<size_t>(i) * d; }
};

Rows make_rows(std::span<const double> v, int n, int d) {
  Rows r{v, n, d, std::vector<char>(n, 0)};
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < d; ++j) {
      if (!std::isfinite(r.at(i, j))) {
        r.bad[i] = 1;
        break;
      }
    }
  }
  return r;
}

// Sort key for coordinate-wise rules: non-finite values sort as +inf.
double key(double x) {
  return std::isfinite(x) ? x : kInf;
}

// Indices of `idx` sorted by (key(value), index); `idx` must be ascending on entry.
void sort_by_value(std::vector<int>& idx, const Rows& r, int j) {
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int a, int b) { return key(r.at(a, j)) < key(r.at(b, j)); });
}

// Median of the values of `members` (ascending indices) at coordinate j; records in `picked` the
// indices that formed it.
double coordinate_median(const Rows& r, std::vector<int> members, int j, std::vector<int>* picked) {
  sort_by_value(members, r, j);
  const size_t m = members.size();
  if (m % 2 == 1) {
    if (picked) picked->assign({members[m / 2]});
    return key(r.at(members[m / 2], j));
  }
  const int lo = members[m / 2 - 1];
  const int hi = members[m / 2];
  if (picked) picked->assign({lo, hi});
  return 0.5 * (key(r.at(lo, j)) + key(r.at(hi, j)));
}

std::vector<int> all_indices(int n) {
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  return idx;
}

std::vector<double> median_rule(const Rows& r, std::vector<double>* weight) {
  std::vector<double> out(r.d);
  std::vector<int> picked;
  const std::vector<int> idx = all_indices(r.n);
  for (int j = 0; j < r.d; ++j) {
    out[j] = coordinate_median(r, idx, j, &picked);
    for (int i : picked) (*weight)[i] += 1.0;
  }
  for (double& w : *weight) w = r.d > 0 ? w / r.d : 0.0;
  return out;
}

std::vector<double> trimmed_mean_rule(const Rows& r, int f, std::vector<double>* weight) {
  std::vector<double> out(r.d);
  std::vector<char> kept(r.n);
  for (int j = 0; j < r.d; ++j) {
    std::vector<int> idx = all_indices(r.n);
    sort_by_value(idx, r, j);
    std::fill(kept.begin(), kept.end(), 0);
    for (int k = f; k < r.n - f; ++k) kept[idx[k]] = 1;
    double sum = 0.0;
    for (int i = 0; i < r.n; ++i) {
      if (kept[i]) {
        sum += key(r.at(i, j));
        (*weight)[i] += 1.0;
      }
    }
    out[j] = sum / (r.n - 2 * f);
  }
  for (double& w : *weight) w = r.d > 0 ? w / r.d : 0.0;
  return out;
}

double squared_distance(const double* a, const double* b, int d) {
  double s = 0.0;
  for (int j = 0; j < d; ++j) {
    const double t = a[j] - b[j];
    s += t * t;
  }
  return s;
}

double norm_of_difference(const double* a, const std::vector<double>& z) {
  return std::sqrt(squared_distance(a, z.data(), static_cast<int>(z.size())));
}

// n x n squared distances; +inf to and from bad rows (0 on the diagonal).
std::vector<double> distance_matrix(const Rows& r) {
  std::vector<double> dist(static_cast<size_t>(r.n) * r.n, 0.0);
  for (int a = 0; a < r.n; ++a) {
    for (int b = a + 1; b < r.n; ++b) {
      const double s = (r.bad[a] || r.bad[b]) ? kInf : squared_distance(r.row(a), r.row(b), r.d);
      dist[static_cast<size_t>(a) * r.n + b] = s;
      dist[static_cast<size_t>(b) * r.n + a] = s;
    }
  }
  return dist;
}

// Krum scores of `members` (ascending indices) with `neighbours` nearest others each; +inf for bad
// rows.
std::vector<double> krum_scores(const Rows& r, const std::vector<double>& dist,
                                const std::vector<int>& members, int neighbours) {
  std::vector<double> score(members.size(), kInf);
  std::vector<double> others;
  for (size_t a = 0; a < members.size(); ++a) {
    const int i = members[a];
    if (r.bad[i]) continue;
    others.clear();
    for (int k : members) {
      if (k != i) others.push_back(dist[static_cast<size_t>(i) * r.n + k]);
    }
    std::sort(others.begin(), others.end());
    double s = 0.0;
    for (int k = 0; k < neighbours && k < static_cast<int>(others.size()); ++k) s += others[k];
    score[a] = s;
  }
  return score;
}

// Positions (into `members`) of the selectable members, by ascending (score, index); bad rows are
// never selectable.
std::vector<int> rank_by_score(const Rows& r, const std::vector<int>& members,
                               const std::vector<double>& score) {
  std::vector<int> pos;
  for (size_t a = 0; a < members.size(); ++a) {
    if (!r.bad[members[a]]) pos.push_back(static_cast<int>(a));
  }
  std::stable_sort(pos.begin(), pos.end(), [&](int a, int b) { return score[a] < score[b]; });
  return pos;
}

// Mean of the rows in `chosen` (any order; summed in ascending index).
std::vector<double> mean_of(const Rows& r, std::vector<int> chosen) {
  std::sort(chosen.begin(), chosen.end());
  std::vector<double> out(r.d, chosen.empty() ? kNaN : 0.0);
  if (chosen.empty()) return out;
  for (int i : chosen) {
    for (int j = 0; j < r.d; ++j) out[j] += r.at(i, j);
  }
  for (double& x : out) x /= static_cast<double>(chosen.size());
  return out;
}

std::vector<double> multi_krum_rule(const Rows& r, int f, int m, std::vector<double>* weight) {
  const std::vector<double> dist = distance_matrix(r);
  const std::vector<int> members = all_indices(r.n);
  const std::vector<double> score = krum_scores(r, dist, members, r.n - f - 2);
  std::vector<int> pos = rank_by_score(r, members, score);
  if (static_cast<int>(pos.size()) > m) pos.resize(m);
  for (int a : pos) (*weight)[members[a]] = 1.0 / static_cast<double>(pos.size());
  std::vector<int> chosen;
  for (int a : pos) chosen.push_back(members[a]);
  return mean_of(r, chosen);
}

std::vector<double> bulyan_rule(const Rows& r, int f, std::vector<double>* weight) {
  const std::vector<double> dist = distance_matrix(r);
  const int theta = r.n - 2 * f;
  const int beta = theta - 2 * f;
  std::vector<int> remaining = all_indices(r.n);
  std::vector<int> selected;
  while (static_cast<int>(selected.size()) < theta) {
    const int k = static_cast<int>(remaining.size());
    const std::vector<double> score = krum_scores(r, dist, remaining, k - f - 2);
    const std::vector<int> pos = rank_by_score(r, remaining, score);
    if (pos.empty()) break;  // only bad rows left
    selected.push_back(remaining[pos[0]]);
    remaining.erase(remaining.begin() + pos[0]);
  }
  std::sort(selected.begin(), selected.end());
  std::vector<double> out(r.d, kNaN);
  if (selected.empty()) return out;
  const int take = std::min<int>(beta, static_cast<int>(selected.size()));
  for (int j = 0; j < r.d; ++j) {
    const double med = coordinate_median(r, selected, j, nullptr);
    std::vector<int> idx = selected;
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
      return std::abs(r.at(a, j) - med) < std::abs(r.at(b, j) - med);
    });
    idx.resize(take);
    std::sort(idx.begin(), idx.end());
    double sum = 0.0;
    for (int i : idx) {
      sum += r.at(i, j);
      (*weight)[i] += 1.0;
    }
    out[j] = sum / take;
  }
  for (double& w : *weight) w = r.d > 0 ? w / r.d : 0.0;
  return out;
}

std::vector<double> geometric_median_rule(const Rows& r, const RuleParams& p,
                                          std::vector<double>* weight) {
  std::vector<double> z(r.d);
  for (int j = 0; j < r.d; ++j) z[j] = coordinate_median(r, all_indices(r.n), j, nullptr);
  std::vector<double> w(r.n, 0.0);
  auto weigh = [&] {
    double total = 0.0;
    for (int i = 0; i < r.n; ++i) {
      w[i] = r.bad[i] ? 0.0 : 1.0 / std::max(p.weiszfeld_nu, norm_of_difference(r.row(i), z));
      total += w[i];
    }
    return total;
  };
  double total = weigh();
  if (total == 0.0) return std::vector<double>(r.d, kNaN);  // every row is bad
  for (int it = 0; it < p.weiszfeld_iterations; ++it) {
    std::vector<double> next(r.d, 0.0);
    for (int i = 0; i < r.n; ++i) {
      if (w[i] == 0.0) continue;
      for (int j = 0; j < r.d; ++j) next[j] += w[i] * r.at(i, j);
    }
    for (double& x : next) x /= total;
    const double step = std::sqrt(squared_distance(next.data(), z.data(), r.d));
    z = std::move(next);
    total = weigh();
    if (step <= p.weiszfeld_tolerance) break;
  }
  for (int i = 0; i < r.n; ++i) (*weight)[i] = w[i] / total;
  return z;
}

std::vector<double> centered_clipping_rule(const Rows& r, const RuleParams& p,
                                           std::vector<double>* weight) {
  std::vector<double> v(r.d);
  for (int j = 0; j < r.d; ++j) v[j] = coordinate_median(r, all_indices(r.n), j, nullptr);
  bool any_good = false;
  for (int i = 0; i < r.n; ++i) any_good = any_good || !r.bad[i];
  if (!any_good) return std::vector<double>(r.d, kNaN);
  std::vector<double> factor(r.n, 0.0);
  for (int it = 0; it < p.clip_iterations; ++it) {
    std::vector<double> step(r.d, 0.0);
    for (int i = 0; i < r.n; ++i) {
      if (r.bad[i]) continue;
      const double dist = norm_of_difference(r.row(i), v);
      factor[i] = dist > 0.0 ? std::min(1.0, p.clip_tau / dist) : 1.0;
      for (int j = 0; j < r.d; ++j) step[j] += (r.at(i, j) - v[j]) * factor[i];
    }
    for (int j = 0; j < r.d; ++j) v[j] += step[j] / r.n;
  }
  if (p.clip_iterations == 0) {
    for (int i = 0; i < r.n; ++i) {
      const double dist = r.bad[i] ? kInf : norm_of_difference(r.row(i), v);
      factor[i] = r.bad[i] ? 0.0 : (dist > 0.0 ? std::min(1.0, p.clip_tau / dist) : 1.0);
    }
  }
  *weight = factor;
  return v;
}

// NNM: each good row becomes the mean of its n - f nearest good rows (itself included, ties to the
// lowest index); bad rows stay as they are.
std::vector<double> nearest_neighbour_mixing(const Rows& r, int f) {
  std::vector<double> mixed(r.v.begin(), r.v.end());
  const std::vector<double> dist = distance_matrix(r);
  for (int i = 0; i < r.n; ++i) {
    if (r.bad[i]) continue;
    std::vector<int> idx;
    for (int k = 0; k < r.n; ++k) {
      if (!r.bad[k]) idx.push_back(k);
    }
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
      return dist[static_cast<size_t>(i) * r.n + a] < dist[static_cast<size_t>(i) * r.n + b];
    });
    if (static_cast<int>(idx.size()) > r.n - f) idx.resize(r.n - f);
    const std::vector<double> m = mean_of(r, idx);
    std::copy(m.begin(), m.end(), mixed.begin() + static_cast<std::ptrdiff_t>(i) * r.d);
  }
  return mixed;
}

void check_params(Rule rule, int n, const RuleParams& p) {
  auto fail = [&](const std::string& what) {
    throw ConfigError(std::string("robust rule ") + to_string(rule) + ": " + what);
  };
  if (rule == Rule::multi_krum && (p.multi_krum_m < 0 || p.multi_krum_m > n - p.f)) {
    fail("multi-krum m = " + std::to_string(p.multi_krum_m) + " must be in [1, n - f] = [1, " +
         std::to_string(n - p.f) + "] (0 means n - f)");
  }
  if (rule == Rule::centered_clipping && (!(p.clip_tau > 0.0) || p.clip_iterations < 0)) {
    fail("centered clipping needs tau > 0 and iterations >= 0");
  }
  if (rule == Rule::geometric_median &&
      (!(p.weiszfeld_nu > 0.0) || p.weiszfeld_iterations < 0 || !(p.weiszfeld_tolerance >= 0.0))) {
    fail("geometric median needs nu > 0, iterations >= 0 and tolerance >= 0");
  }
}

}  // namespace

Rule parse_rule(const std::string& name) {
  std::string known;
  for (const RuleName& rn : kRuleNames) {
    if (name == rn.name) return rn.rule;
    known += known.empty() ? "" : ", ";
    known += rn.name;
  }
  throw ConfigError("unknown robust rule '" + name + "'; known rules: " + known);
}

const char* to_string(Rule rule) {
  for (const RuleName& rn : kRuleNames) {
    if (rn.rule == rule) return rn.name;
  }
  return "unknown";
}

void check_requirement(Rule rule, int n, int f, const std::string& group) {
  const std::string where =
      "; group '" + group + "' has n = " + std::to_string(n) + " with f = " + std::to_string(f);
  const std::string name = std::string("robust rule ") + to_string(rule);
  if (f < 0) throw ConfigError(name + " needs f >= 0" + where);
  if (n < 1) throw ConfigError(name + " needs n >= 1 ranks" + where);
  switch (rule) {
    case Rule::mean:
      return;
    case Rule::median:
    case Rule::trimmed_mean:
    case Rule::geometric_median:
    case Rule::centered_clipping:
      if (n <= 2 * f) throw ConfigError(name + " needs n > 2f ranks" + where);
      return;
    case Rule::krum:
    case Rule::multi_krum:
      if (n < 2 * f + 3) throw ConfigError(name + " needs n >= 2f+3 ranks" + where);
      return;
    case Rule::bulyan:
      if (n < 4 * f + 3) throw ConfigError(name + " needs n >= 4f+3 ranks" + where);
      return;
  }
}

std::vector<double> aggregate(Rule rule, std::span<const double> rows, int n, int d,
                              const RuleParams& params, RuleOutcome* outcome) {
  check_requirement(rule, n, params.f, "aggregate");
  if (d < 0 || rows.size() != static_cast<size_t>(n) * static_cast<size_t>(d)) {
    throw Error("robust aggregate: " + std::to_string(rows.size()) +
                " values for n = " + std::to_string(n) + " rows of d = " + std::to_string(d));
  }
  check_params(rule, n, params);
  const int f = params.f;

  std::vector<double> mixed;
  Rows r = make_rows(rows, n, d);
  if (params.nnm) {
    mixed = nearest_neighbour_mixing(r, f);
    r.v = mixed;  // bad flags are unchanged: good rows mix good rows only
  }

  std::vector<double> weight(n, 0.0);
  std::vector<double> out;
  switch (rule) {
    case Rule::mean: {
      out.assign(d, 0.0);
      for (int i = 0; i < n; ++i) {
        for (int j = 0; j < d; ++j) out[j] += r.at(i, j);
      }
      for (double& x : out) x /= n;
      std::fill(weight.begin(), weight.end(), 1.0 / n);
      break;
    }
    case Rule::median:
      out = median_rule(r, &weight);
      break;
    case Rule::trimmed_mean:
      out = trimmed_mean_rule(r, f, &weight);
      break;
    case Rule::geometric_median:
      out = geometric_median_rule(r, params, &weight);
      break;
    case Rule::krum:
      out = multi_krum_rule(r, f, 1, &weight);
      break;
    case Rule::multi_krum:
      out = multi_krum_rule(r, f, params.multi_krum_m == 0 ? n - f : params.multi_krum_m, &weight);
      break;
    case Rule::bulyan:
      out = bulyan_rule(r, f, &weight);
      break;
    case Rule::centered_clipping:
      out = centered_clipping_rule(r, params, &weight);
      break;
  }
  if (outcome) outcome->weight = std::move(weight);
  return out;
}

}  // namespace daa::robust
