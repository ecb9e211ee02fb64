// The robust rules as chunked phases (private to the robust module). A round splits the d
// coordinates into chunks; each phase computes a small summary per chunk, the summaries are summed
// in chunk order, and a plan computed from the totals drives the next phase. Host aggregate(), the
// replicated round and the sharded round all run these same functions, so they agree bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <vector>

#include "daa/robust/rules.hpp"
#include "daa/robust/sorting_network.hpp"

namespace daa::robust::engine {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// d coordinates in `chunks` balanced chunks; the first d % chunks get one extra coordinate.
struct Chunking {
  std::size_t d = 0;
  int chunks = 1;
  std::size_t begin(int c) const {
    const std::size_t base = d / std::size_t(chunks), extra = d % std::size_t(chunks);
    return base * std::size_t(c) + std::min<std::size_t>(std::size_t(c), extra);
  }
  std::size_t size(int c) const { return begin(c + 1) - begin(c); }
};

// Which phases a rule needs: phase 1 (non-finite flags, plus the Gram matrix for distance-based
// rules and NNM) always; phase 2 (the coordinate-wise median as a start point, and its inner
// products with the rows) for the iterative rules.
inline bool needs_gram(Rule rule, bool nnm) {
  return nnm || rule == Rule::krum || rule == Rule::multi_krum || rule == Rule::bulyan ||
         rule == Rule::geometric_median || rule == Rule::centered_clipping;
}
inline bool needs_center(Rule rule) {
  return rule == Rule::geometric_median || rule == Rule::centered_clipping;
}

// Summary sizes per chunk, for n active rows out of n_all. Coordinate-wise rules need no phase 1:
// they treat non-finite values per coordinate, and the final phase reports non-finite rows.
inline std::size_t phase1_size(Rule rule, bool nnm, int n) {
  return needs_gram(rule, nnm) ? std::size_t(n) + std::size_t(n) * (n + 1) / 2 : 0;
}
inline std::size_t phase2_size(int n) {
  return std::size_t(n) + 1;
}
// Final: per active row its coordinate count (coordinate rules, Bulyan); per row of all rows its
// squared distance from the result, its non-finite flag and its inner product with the result;
// then the result's squared norm.
inline std::size_t final_size(int n, int n_all) {
  return std::size_t(n) + 3 * std::size_t(n_all) + 1;
}

// Sort key of coordinate rules: a non-finite value sorts as +inf.
// (x - x == 0 holds exactly for finite x, and compiles to a vector compare.)
template <class R>
inline R sort_key(R x) {
  return x - x == R(0) ? x : std::numeric_limits<R>::infinity();
}

// Dot product over `len` values in 8 interleaved partial sums, combined in a fixed order: the
// same bits on every rank, at vector speed (one serial sum runs at the adder's latency).
template <class A, class B>
inline double dot(const A* a, const B* b, std::size_t len) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t j = 0;
  for (; j + 8 <= len; j += 8)
    for (int l = 0; l < 8; ++l) lane[l] += double(a[j + l]) * double(b[j + l]);
  for (int l = 0; j < len; ++j, ++l) lane[l] += double(a[j]) * double(b[j]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// Coordinates per block of the final phase: the rows of one block stay in cache while the rule,
// its counts and the rows' distances from the result read them (one pass over the rows).
constexpr std::size_t kRuleBlock = 256;

template <class R>
inline bool any_non_finite(const R* x, std::size_t len) {
  int bad = 0;
  for (std::size_t j = 0; j < len; ++j) bad |= (x[j] - x[j] != R(0));
  return bad != 0;
}

// One chunk of the rows: row i starts at rows[i] and has `len` values.
template <class R>
struct ChunkRows {
  std::vector<const R*> rows;
  std::size_t len = 0;
  int n() const { return int(rows.size()); }
};

#if defined(__GNUC__) && !defined(__CUDACC__)
// Eight values of X as one vector (GCC's vector extension), element-wise arithmetic.
template <class X>
struct EightLanes {
  typedef X type __attribute__((vector_size(8 * sizeof(X))));
};
#endif

// Eight partial sums combined in the fixed order every sum of the engine uses.
inline double combine_lanes(const double* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// The rows' position relative to a result, for the ledger: squared distances, non-finite flags and
// inner products <x_i, r>, plus <r, r>, accumulated block by block in 8 interleaved partial sums
// per row (lane j % 8, as dot() does over a whole chunk) and combined in a fixed order: the bits
// do not depend on the block size, which is a multiple of 8.
template <class R, class T>
class RowPositionSums {
 public:
  RowPositionSums(const ChunkRows<R>& rows, const T* result)
      : rows_(rows),
        result_(result),
        lane_(std::size_t(rows.n()) * 8, 0.0),
        inner_(std::size_t(rows.n()) * 8, 0.0),
        bad_(rows.n(), 0) {}
  // Coordinates [j0, j0 + b) of every row; j0 is a multiple of 8, and only the last block is short.
  void add_block(std::size_t j0, std::size_t b) {
    int i = 0;
    for (; i + 4 <= rows_.n(); i += 4) add_rows<4>(i, j0, b);
    for (; i < rows_.n(); ++i) add_rows<1>(i, j0, b);
    const T* c = result_ + j0;
    std::size_t j = 0;
    for (; j + 8 <= b; j += 8)
      for (int l = 0; l < 8; ++l) norm_[l] += double(c[j + l]) * double(c[j + l]);
    for (int l = 0; j < b; ++j, ++l) norm_[l] += double(c[j]) * double(c[j]);
  }
  // Per row: squared distance, non-finite flag (1 or 0) and <x_i, r>; then <r, r>.
  void write(double* distance, double* non_finite, double* inner, double* norm) const {
    for (int i = 0; i < rows_.n(); ++i) {
      distance[i] = combine_lanes(lane_.data() + std::size_t(i) * 8);
      non_finite[i] = bad_[i] ? 1.0 : 0.0;
      inner[i] = combine_lanes(inner_.data() + std::size_t(i) * 8);
    }
    *norm = combine_lanes(norm_);
  }

 private:
  // G rows side by side, each with its own eight lanes in its own order (the same bits as one row
  // at a time): G independent chains of additions. The eight lanes are one vector (GCC's vector
  // extension: the project builds with -fno-tree-slp-vectorize, so the compiler would not form
  // it from the lane loop); each element is the scalar lane's operation, so the bits are those
  // of the scalar form, which nvcc's front end gets instead.
  template <int G>
  void add_rows(int first, std::size_t j0, std::size_t b) {
    const R* a[G];
    for (int g = 0; g < G; ++g) a[g] = rows_.rows[first + g] + j0;
    const T* c = result_ + j0;
    double lane[G][8], inner[G][8];
    // x - x is 0 for a finite x and NaN otherwise, and NaN stays in a sum: a branch-free
    // non-finite test that vectorizes with the distances.
    R probe[G][8];
    for (int g = 0; g < G; ++g) {
      std::copy_n(lane_.data() + std::size_t(first + g) * 8, 8, lane[g]);
      std::copy_n(inner_.data() + std::size_t(first + g) * 8, 8, inner[g]);
      std::fill_n(probe[g], 8, R(0));
    }
    std::size_t j = 0;
#if defined(__GNUC__) && !defined(__CUDACC__)
    using Wide = typename EightLanes<double>::type;
    using RowLanes = typename EightLanes<R>::type;
    using ResultLanes = typename EightLanes<T>::type;
    Wide acc[G], dot[G];
    RowLanes bad[G];
    for (int g = 0; g < G; ++g) {
      std::memcpy(&acc[g], lane[g], sizeof(Wide));
      std::memcpy(&dot[g], inner[g], sizeof(Wide));
      std::memcpy(&bad[g], probe[g], sizeof(RowLanes));
    }
    for (; j + 8 <= b; j += 8) {
      ResultLanes cv;
      std::memcpy(&cv, c + j, sizeof cv);
      const Wide cw = __builtin_convertvector(cv, Wide);
      for (int g = 0; g < G; ++g) {
        RowLanes av;
        std::memcpy(&av, a[g] + j, sizeof av);
        bad[g] += av - av;
        const Wide aw = __builtin_convertvector(av, Wide);
        const Wide t = aw - cw;
        acc[g] += t * t;
        dot[g] += aw * cw;
      }
    }
    for (int g = 0; g < G; ++g) {
      std::memcpy(lane[g], &acc[g], sizeof(Wide));
      std::memcpy(inner[g], &dot[g], sizeof(Wide));
      std::memcpy(probe[g], &bad[g], sizeof(RowLanes));
    }
#else
    for (; j + 8 <= b; j += 8)
      for (int g = 0; g < G; ++g)
        for (int l = 0; l < 8; ++l) {
          probe[g][l] += a[g][j + l] - a[g][j + l];
          const double t = double(a[g][j + l]) - double(c[j + l]);
          lane[g][l] += t * t;
          inner[g][l] += double(a[g][j + l]) * double(c[j + l]);
        }
#endif
    for (int l = 0; j < b; ++j, ++l)
      for (int g = 0; g < G; ++g) {
        probe[g][l] += a[g][j] - a[g][j];
        const double t = double(a[g][j]) - double(c[j]);
        lane[g][l] += t * t;
        inner[g][l] += double(a[g][j]) * double(c[j]);
      }
    for (int g = 0; g < G; ++g) {
      std::copy_n(lane[g], 8, lane_.data() + std::size_t(first + g) * 8);
      std::copy_n(inner[g], 8, inner_.data() + std::size_t(first + g) * 8);
      for (int l = 0; l < 8; ++l) bad_[first + g] |= probe[g][l] != R(0);
    }
  }

  const ChunkRows<R>& rows_;
  const T* result_;
  std::vector<double> lane_, inner_;
  double norm_[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::vector<int> bad_;
};

// Phase 1 of one chunk: flags (1 for a row with a non-finite value in this chunk), then the
// upper triangle of the Gram matrix <x_a, x_b> (a <= b), row by row, summed in coordinate order.
template <class R>
void phase1(const ChunkRows<R>& x, Rule rule, bool nnm, double* out) {
  const int n = x.n();
  if (!needs_gram(rule, nnm)) return;
  for (int i = 0; i < n; ++i) out[i] = any_non_finite(x.rows[i], x.len) ? 1.0 : 0.0;
  double* gram = out + n;
  for (int a = 0; a < n; ++a)
    for (int b = a; b < n; ++b) *gram++ = dot(x.rows[a], x.rows[b], x.len);
}

// Adds `part` into `total` element-wise (chunk summaries summed in chunk order).
inline void accumulate(std::span<double> total, std::span<const double> part) {
  for (std::size_t k = 0; k < total.size(); ++k) total[k] += part[k];
}

// Everything the rule decided from the summaries; identical on every rank that computed it.
struct Plan {
  Rule rule = Rule::mean;
  RuleParams params;
  int n = 0;
  std::vector<char> bad;       // row has a non-finite value somewhere
  std::vector<double> mix;     // NNM: n x n mixing matrix (row i: weights of the rows in y_i)
  std::vector<double> gram;    // n x n Gram matrix of the rows the rule sees (mixed under NNM)
  std::vector<int> selected;   // Krum, Multi-Krum, Bulyan: the selected rows, ascending
  std::vector<double> coef;    // iterative rules: result = sum coef[i] y_i + coef[n] * center
  std::vector<double> weight;  // per-row weight where it is known globally (not coordinate rules)
  bool coordinate_weights = false;  // weights come from the final counts
  double sq_distance(int a, int b) const {
    const std::size_t n_ = std::size_t(n);
    return std::max(0.0, gram[a * n_ + a] + gram[b * n_ + b] - 2 * gram[a * n_ + b]);
  }
};

inline std::vector<int> good_rows(const Plan& p) {
  std::vector<int> idx;
  for (int i = 0; i < p.n; ++i)
    if (!p.bad[i]) idx.push_back(i);
  return idx;
}

// Krum scores of `members` (ascending) with `neighbours` nearest others; +inf for bad rows.
inline std::vector<double> krum_scores(const Plan& p, const std::vector<int>& members,
                                       int neighbours) {
  std::vector<double> score(members.size(), kInf), others;
  for (std::size_t a = 0; a < members.size(); ++a) {
    const int i = members[a];
    if (p.bad[i]) continue;
    others.clear();
    for (int k : members)
      if (k != i) others.push_back(p.bad[k] ? kInf : p.sq_distance(i, k));
    std::sort(others.begin(), others.end());
    double s = 0;
    for (int k = 0; k < neighbours && k < int(others.size()); ++k) s += others[k];
    score[a] = s;
  }
  return score;
}

// Positions into `members` of the selectable (good) ones by ascending (score, position).
inline std::vector<int> rank_by_score(const Plan& p, const std::vector<int>& members,
                                      const std::vector<double>& score) {
  std::vector<int> pos;
  for (std::size_t a = 0; a < members.size(); ++a)
    if (!p.bad[members[a]]) pos.push_back(int(a));
  std::stable_sort(pos.begin(), pos.end(), [&](int a, int b) { return score[a] < score[b]; });
  return pos;
}

// The plan after phase 1: bad rows, NNM mixing, Krum-family selections. `total` is the chunk-sum
// of phase-1 summaries.
inline Plan plan_after_phase1(Rule rule, const RuleParams& params, int n,
                              std::span<const double> total) {
  Plan p;
  p.rule = rule;
  p.params = params;
  p.n = n;
  p.bad.assign(n, 0);
  if (!total.empty())
    for (int i = 0; i < n; ++i) p.bad[i] = total[i] > 0 ? 1 : 0;
  p.weight.assign(n, 0.0);
  const int f = params.f;
  if (needs_gram(rule, params.nnm)) {
    // Full symmetric Gram; bad rows' entries are meaningless and zeroed so that no NaN leaks
    // through a zero coefficient.
    p.gram.assign(std::size_t(n) * n, 0.0);
    const double* g = total.data() + n;
    for (int a = 0; a < n; ++a)
      for (int b = a; b < n; ++b, ++g)
        if (!p.bad[a] && !p.bad[b])
          p.gram[a * std::size_t(n) + b] = p.gram[b * std::size_t(n) + a] = *g;
  }
  if (params.nnm) {
    // NNM: each good row becomes the mean of its n - f nearest good rows (itself included, ties to
    // the lowest index); bad rows stay as they are.
    p.mix.assign(std::size_t(n) * n, 0.0);
    const std::vector<int> good = good_rows(p);
    for (int i = 0; i < n; ++i) {
      if (p.bad[i]) {
        p.mix[i * std::size_t(n) + i] = 1.0;
        continue;
      }
      std::vector<int> idx = good;
      std::stable_sort(idx.begin(), idx.end(),
                       [&](int a, int b) { return p.sq_distance(i, a) < p.sq_distance(i, b); });
      if (int(idx.size()) > n - f) idx.resize(n - f);
      for (int k : idx) p.mix[i * std::size_t(n) + k] = 1.0 / double(idx.size());
    }
    // Gram of the mixed rows: M G M^T (bad rows keep zero entries).
    std::vector<double> mg(std::size_t(n) * n, 0.0), mixed(std::size_t(n) * n, 0.0);
    for (int a = 0; a < n; ++a)
      for (int k = 0; k < n; ++k)
        if (const double m = p.mix[a * std::size_t(n) + k]; m != 0.0 && !p.bad[a])
          for (int b = 0; b < n; ++b)
            mg[a * std::size_t(n) + b] += m * p.gram[k * std::size_t(n) + b];
    for (int a = 0; a < n; ++a)
      for (int b = 0; b < n; ++b) {
        if (p.bad[a] || p.bad[b]) continue;
        double s = 0;
        for (int k = 0; k < n; ++k) s += mg[a * std::size_t(n) + k] * p.mix[b * std::size_t(n) + k];
        mixed[a * std::size_t(n) + b] = s;
      }
    p.gram = std::move(mixed);
  }
  switch (rule) {
    case Rule::mean:
      std::fill(p.weight.begin(), p.weight.end(), 1.0 / n);
      break;
    case Rule::median:
    case Rule::trimmed_mean:
      p.coordinate_weights = true;
      break;
    case Rule::krum:
    case Rule::multi_krum: {
      std::vector<int> members(n);
      std::iota(members.begin(), members.end(), 0);
      const int m =
          rule == Rule::krum ? 1 : (params.multi_krum_m == 0 ? n - f : params.multi_krum_m);
      const std::vector<double> score = krum_scores(p, members, n - f - 2);
      std::vector<int> pos = rank_by_score(p, members, score);
      if (int(pos.size()) > m) pos.resize(m);
      for (int a : pos) p.selected.push_back(members[a]);
      std::sort(p.selected.begin(), p.selected.end());
      for (int i : p.selected) p.weight[i] = 1.0 / double(p.selected.size());
      break;
    }
    case Rule::bulyan: {
      const int theta = n - 2 * f;
      std::vector<int> remaining(n);
      std::iota(remaining.begin(), remaining.end(), 0);
      while (int(p.selected.size()) < theta) {
        const int k = int(remaining.size());
        const std::vector<double> score = krum_scores(p, remaining, k - f - 2);
        const std::vector<int> pos = rank_by_score(p, remaining, score);
        if (pos.empty()) break;  // only bad rows left
        p.selected.push_back(remaining[pos[0]]);
        remaining.erase(remaining.begin() + pos[0]);
      }
      std::sort(p.selected.begin(), p.selected.end());
      p.coordinate_weights = true;
      break;
    }
    case Rule::geometric_median:
    case Rule::centered_clipping:
      break;  // planned after phase 2
  }
  return p;
}

// The rows the rule sees in one chunk: the input rows, or under NNM their mixtures (materialized
// in `storage`, n x len doubles).
template <class R>
struct RuleRows {
  const ChunkRows<R>* raw = nullptr;
  ChunkRows<double> mixed;
  bool is_mixed = false;
};

// `mixed_already`: `storage` holds this chunk's mixtures under this plan from an earlier call (a
// round computes them once per chunk for phase 2 and the final phase).
template <class R>
RuleRows<R> rule_rows(const Plan& p, const ChunkRows<R>& x, std::vector<double>& storage,
                      bool mixed_already = false) {
  RuleRows<R> r;
  r.raw = &x;
  if (p.mix.empty()) return r;
  const int n = p.n;
  if (!mixed_already) storage.assign(std::size_t(n) * x.len, 0.0);
  for (int i = 0; i < n; ++i) {
    double* y = storage.data() + std::size_t(i) * x.len;
    r.mixed.rows.push_back(y);
    if (mixed_already) continue;
    for (int k = 0; k < n; ++k) {  // ascending k: a fixed order of every sum
      const double m = p.mix[i * std::size_t(n) + k];
      if (m == 0.0) continue;
      const R* xk = x.rows[k];
      if (p.bad[i]) {  // a bad row stays as it is (m == 1 on the diagonal)
        for (std::size_t j = 0; j < x.len; ++j) y[j] = double(xk[j]);
      } else {
        for (std::size_t j = 0; j < x.len; ++j) y[j] += m * double(xk[j]);
      }
    }
  }
  r.mixed.len = x.len;
  r.is_mixed = true;
  return r;
}

// Coordinate-wise median or trimmed mean of one chunk of rows into out[0..len), and per row the
// number of coordinates where its value is one of those the rule used (when `counts` is not null;
// between the two middle values, or the smallest and largest kept value: ties count too).
// Non-finite values are dropped per coordinate: with m of them, the median is that of the n - m
// finite values, and the trimmed mean trims max(0, f - m) from the bottom and keeps at most n - f
// (the m dropped count as trimmed from the top), so a NaN costs what a missing value would.
// `after_block(j0, b)` runs once the results of coordinates [j0, j0 + b) are written.
struct NoBlockHook {
  void operator()(std::size_t, std::size_t) const {}
};
template <class R, class T, class AfterBlock = NoBlockHook>
void coordinate_rule(const ChunkRows<R>& y, Rule rule, int f, T* out, double* counts,
                     AfterBlock after_block = {}) {
  const int n = y.n();
  constexpr std::size_t kBlock = kRuleBlock;
  static thread_local std::vector<R> sorted;
  static thread_local std::vector<std::pair<int, int>> network;
  static thread_local int network_n = -1;
  if (network_n != n) network = sorting_network(n), network_n = n;
  sorted.resize(std::size_t(n) * kBlock);
  std::vector<std::int64_t> count(n, 0);
  double sum[kBlock];
  std::int32_t bad[kBlock], low[kBlock], high[kBlock];  // [low, high): the values used
  R lo[kBlock], hi[kBlock];
  for (std::size_t j0 = 0; j0 < y.len; j0 += kBlock) {
    const std::size_t b = std::min(kBlock, y.len - j0);
    for (std::size_t j = 0; j < b; ++j) bad[j] = 0;
    for (int i = 0; i < n; ++i) {
      R* s = sorted.data() + std::size_t(i) * kBlock;
      const R* v = y.rows[i] + j0;
      for (std::size_t j = 0; j < b; ++j) {
        s[j] = sort_key(v[j]);
        bad[j] += std::int32_t(v[j] - v[j] != R(0));
      }
    }
    for (const auto& [a, c] : network) {
      R* sa = sorted.data() + std::size_t(a) * kBlock;
      R* sc = sorted.data() + std::size_t(c) * kBlock;
      for (std::size_t j = 0; j < b; ++j) {
        const R l = std::min(sa[j], sc[j]), h = std::max(sa[j], sc[j]);
        sa[j] = l;
        sc[j] = h;
      }
    }
    std::int32_t any_bad = 0;
    for (std::size_t j = 0; j < b; ++j) any_bad |= bad[j];
    if (!any_bad) {
      // The common case: every value finite, the same order statistics for the whole block.
      const int lo_rank = rule == Rule::median ? (n - 1) / 2 : f;
      const int hi_rank = rule == Rule::median ? n / 2 : n - f - 1;
      const R* l = sorted.data() + std::size_t(lo_rank) * kBlock;
      const R* h = sorted.data() + std::size_t(hi_rank) * kBlock;
      for (std::size_t j = 0; j < b; ++j) lo[j] = l[j], hi[j] = h[j];
      if (rule == Rule::median) {
        for (std::size_t j = 0; j < b; ++j) out[j0 + j] = T(0.5 * (double(lo[j]) + double(hi[j])));
      } else {  // the kept values, summed in ascending value order
        for (std::size_t j = 0; j < b; ++j) sum[j] = 0;
        for (int k = f; k < n - f; ++k) {
          const R* v = sorted.data() + std::size_t(k) * kBlock;
          for (std::size_t j = 0; j < b; ++j) sum[j] += double(v[j]);
        }
        const double kept = double(n - 2 * f);
        for (std::size_t j = 0; j < b; ++j) out[j0 + j] = T(sum[j] / kept);
      }
    } else {
      for (std::size_t j = 0; j < b; ++j) {
        const std::int32_t finite = n - bad[j];
        if (rule == Rule::median) {
          low[j] = finite > 0 ? (finite - 1) / 2 : 0;
          high[j] = finite > 0 ? finite / 2 + 1 : 1;
        } else {
          low[j] = std::max(0, f - bad[j]);
          high[j] = std::min(n - f, finite);
        }
        // Every value non-finite (more than f bad rows): the top value, which is +inf.
        if (high[j] <= low[j]) low[j] = n - 1, high[j] = n;
        lo[j] = sorted[std::size_t(low[j]) * kBlock + j];
        hi[j] = sorted[std::size_t(high[j] - 1) * kBlock + j];
      }
      if (rule == Rule::median) {
        for (std::size_t j = 0; j < b; ++j) out[j0 + j] = T(0.5 * (double(lo[j]) + double(hi[j])));
      } else {  // the kept values, summed in ascending value order
        for (std::size_t j = 0; j < b; ++j) sum[j] = 0;
        for (int k = 0; k < n; ++k) {
          const R* v = sorted.data() + std::size_t(k) * kBlock;
          for (std::size_t j = 0; j < b; ++j)
            sum[j] += (k >= low[j] && k < high[j]) ? double(v[j]) : 0.0;
        }
        for (std::size_t j = 0; j < b; ++j) out[j0 + j] = T(sum[j] / double(high[j] - low[j]));
      }
    }
    for (int i = 0; i < n && counts; ++i) {
      const R* v = y.rows[i] + j0;
      std::int32_t c = 0;
      for (std::size_t j = 0; j < b; ++j) {
        const R key = sort_key(v[j]);
        c += std::int32_t(key >= lo[j]) & std::int32_t(key <= hi[j]);
      }
      count[i] += c;
    }
    after_block(j0, b);
  }
  for (int i = 0; i < n && counts; ++i) counts[i] = double(count[i]);
}

// Phase 2 of one chunk (iterative rules): the coordinate-wise median `center` of the rule rows,
// then <y_i, center> for good rows and <center, center>.
template <class R>
void phase2(const Plan& p, const RuleRows<R>& rows, std::vector<double>& center, double* out) {
  const std::size_t len = rows.is_mixed ? rows.mixed.len : rows.raw->len;
  center.resize(len);
  if (rows.is_mixed)
    coordinate_rule(rows.mixed, Rule::median, 0, center.data(), nullptr);
  else
    coordinate_rule(*rows.raw, Rule::median, 0, center.data(), nullptr);
  for (int i = 0; i < p.n; ++i) {
    if (p.bad[i])
      out[i] = 0;
    else
      out[i] = rows.is_mixed ? dot(rows.mixed.rows[i], center.data(), len)
                             : dot(rows.raw->rows[i], center.data(), len);
  }
  out[p.n] = dot(center.data(), center.data(), len);
}

// The iterative rules in coefficient space: with the basis y_0..y_{n-1}, center, every iterate is
// sum coef[k] * basis[k], and its distances follow from the basis Gram matrix H.
inline void plan_after_phase2(Plan& p, std::span<const double> total) {
  const int n = p.n, m = n + 1;
  std::vector<double> h(std::size_t(m) * m, 0.0);
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b) h[a * std::size_t(m) + b] = p.gram[a * std::size_t(n) + b];
  for (int a = 0; a < n; ++a) h[a * std::size_t(m) + n] = h[n * std::size_t(m) + a] = total[a];
  h[n * std::size_t(m) + n] = total[n];
  auto quad = [&](const std::vector<double>& c) {  // c^T H c
    double s = 0;
    for (int a = 0; a < m; ++a) {
      if (c[a] == 0.0) continue;
      double r = 0;
      for (int b = 0; b < m; ++b) r += h[a * std::size_t(m) + b] * c[b];
      s += c[a] * r;
    }
    return s;
  };
  auto distance = [&](int i, const std::vector<double>& c, double cc) {  // ||y_i - z||
    double hc = 0;
    for (int b = 0; b < m; ++b) hc += h[i * std::size_t(m) + b] * c[b];
    return std::sqrt(std::max(0.0, h[i * std::size_t(m) + i] - 2 * hc + cc));
  };
  std::vector<double> c(m, 0.0);
  c[n] = 1.0;  // start at the coordinate-wise median
  bool any_good = false;
  for (int i = 0; i < n; ++i) any_good = any_good || !p.bad[i];
  if (!any_good) {  // every row is bad: no value to return
    p.coef.assign(m, kNaN);
    return;
  }
  const RuleParams& q = p.params;
  if (p.rule == Rule::geometric_median) {
    std::vector<double> w(n, 0.0);
    auto weigh = [&] {
      const double cc = quad(c);
      double sum = 0;
      for (int i = 0; i < n; ++i) {
        w[i] = p.bad[i] ? 0.0 : 1.0 / std::max(q.weiszfeld_nu, distance(i, c, cc));
        sum += w[i];
      }
      return sum;
    };
    double sum = weigh();
    for (int it = 0; it < q.weiszfeld_iterations; ++it) {
      std::vector<double> next(m, 0.0);
      for (int i = 0; i < n; ++i) next[i] = w[i] / sum;
      std::vector<double> delta(m);
      for (int k = 0; k < m; ++k) delta[k] = next[k] - c[k];
      const double step = std::sqrt(std::max(0.0, quad(delta)));
      c = std::move(next);
      sum = weigh();
      if (step <= q.weiszfeld_tolerance) break;
    }
    for (int i = 0; i < n; ++i) p.weight[i] = w[i] / sum;
  } else {  // centered clipping
    std::vector<double> factor(n, 0.0);
    auto clip = [&] {
      const double cc = quad(c);
      for (int i = 0; i < n; ++i) {
        if (p.bad[i]) continue;
        const double dist = distance(i, c, cc);
        factor[i] = dist > 0.0 ? std::min(1.0, q.clip_tau / dist) : 1.0;
      }
    };
    for (int it = 0; it < q.clip_iterations; ++it) {
      clip();
      // v <- v + (1/n) sum_i factor_i (y_i - v)
      double factor_sum = 0;
      for (int i = 0; i < n; ++i) factor_sum += factor[i];
      std::vector<double> next(m);
      for (int k = 0; k < m; ++k) next[k] = c[k] * (1.0 - factor_sum / n);
      for (int i = 0; i < n; ++i) next[i] += factor[i] / n;
      c = std::move(next);
    }
    if (q.clip_iterations == 0) clip();
    p.weight = factor;
  }
  p.coef = std::move(c);
}

// Final phase of one chunk: the result out[0..len) and, unless `summary` is null (no ledger to
// report to), the final summary (see final_size). `all` are every row of the chunk (active ones
// first, in the plan's order, then excluded ones): their positions relative to the result are
// measured on the rows as contributed, not mixed, in the same pass as the rule, block by block.
template <class R, class T>
void finish_chunk(const Plan& p, const RuleRows<R>& rows, const std::vector<double>& center,
                  const ChunkRows<R>& all, T* out, double* summary) {
  const int n = p.n;
  const std::size_t len = all.len;
  double* counts = summary;
  if (counts) std::fill(counts, counts + n, 0.0);
  std::optional<RowPositionSums<R, T>> positions;
  if (summary) positions.emplace(all, out);
  auto after_block = [&](std::size_t j0, std::size_t b) {
    if (positions) positions->add_block(j0, b);
  };
  auto row = [&](int i, std::size_t j) {
    return rows.is_mixed ? rows.mixed.rows[i][j] : double(rows.raw->rows[i][j]);
  };
  // acc[j] += w * row_i[j] over rows in ascending order: a fixed order per coordinate that
  // vectorizes across coordinates.
  double acc[kRuleBlock];
  auto add_row = [&](int i, double w, std::size_t j0, std::size_t b) {
    if (rows.is_mixed) {
      const double* y = rows.mixed.rows[i] + j0;
      for (std::size_t j = 0; j < b; ++j) acc[j] += w * y[j];
    } else {
      const R* y = rows.raw->rows[i] + j0;
      for (std::size_t j = 0; j < b; ++j) acc[j] += w * double(y[j]);
    }
  };
  // The rules that weigh whole rows, one block at a time: out = (start + sum_i w_i row_i) / div.
  auto weighted_rows = [&](auto start, auto weight, double divisor) {
    for (std::size_t j0 = 0; j0 < len; j0 += kRuleBlock) {
      const std::size_t b = std::min(kRuleBlock, len - j0);
      for (std::size_t j = 0; j < b; ++j) acc[j] = start(j0 + j);
      for (int i = 0; i < n; ++i)
        if (const double w = weight(i); w != 0.0) add_row(i, w, j0, b);
      for (std::size_t j = 0; j < b; ++j) out[j0 + j] = T(acc[j] / divisor);
      after_block(j0, b);
    }
  };
  switch (p.rule) {
    case Rule::median:
    case Rule::trimmed_mean:
      if (rows.is_mixed)
        coordinate_rule(rows.mixed, p.rule, p.params.f, out, counts, after_block);
      else
        coordinate_rule(*rows.raw, p.rule, p.params.f, out, counts, after_block);
      break;
    case Rule::mean:
      weighted_rows([](std::size_t) { return 0.0; }, [](int) { return 1.0; }, double(n));
      break;
    case Rule::krum:
    case Rule::multi_krum: {
      std::vector<double> chosen(n, 0.0);
      for (int i : p.selected) chosen[i] = 1.0;
      const double start = p.selected.empty() ? kNaN : 0.0;
      weighted_rows([&](std::size_t) { return start; }, [&](int i) { return chosen[i]; },
                    double(p.selected.size()));
      break;
    }
    case Rule::bulyan: {
      const int theta = int(p.selected.size());
      const int take = std::max(1, std::min<int>(theta - 2 * p.params.f, theta));
      const auto count = static_cast<std::size_t>(theta);
      std::vector<double> vals(count), sorted(count);
      std::vector<int> idx(count);
      for (std::size_t j0 = 0; j0 < len; j0 += kRuleBlock) {
        const std::size_t b = std::min(kRuleBlock, len - j0);
        for (std::size_t j = j0; j < j0 + b; ++j) {
          if (theta == 0) {
            out[j] = T(kNaN);
            continue;
          }
          for (int k = 0; k < theta; ++k) sorted[k] = vals[k] = row(p.selected[k], j);
          std::sort(sorted.begin(), sorted.end());
          const double med =
              theta % 2 ? sorted[theta / 2] : 0.5 * (sorted[theta / 2 - 1] + sorted[theta / 2]);
          // Insertion sort by distance from the median: stable, so ties keep the lowest index.
          for (int k = 0; k < theta; ++k) {
            int m = k;
            while (m > 0 && std::abs(vals[k] - med) < std::abs(vals[idx[m - 1]] - med)) {
              idx[m] = idx[m - 1];
              --m;
            }
            idx[m] = k;
          }
          std::sort(idx.begin(), idx.begin() + take);
          double sum = 0;
          for (int k = 0; k < take; ++k) {
            sum += vals[idx[k]];
            if (counts) counts[p.selected[idx[k]]] += 1.0;
          }
          out[j] = T(sum / take);
        }
        after_block(j0, b);
      }
      break;
    }
    case Rule::geometric_median:
    case Rule::centered_clipping:
      weighted_rows([&](std::size_t j) { return p.coef[n] * center[j]; },
                    [&](int i) { return p.coef[i]; }, 1.0);
      break;
  }
  if (positions) {
    const int n_all = all.n();
    positions->write(summary + n, summary + n + n_all, summary + n + 2 * n_all,
                     summary + n + 3 * n_all);
  }
}

// Where each row of a round lies relative to the result, in the engine's row order.
struct RowPositions {
  std::vector<double> distance;  // Euclidean distance from the result; +inf when non-finite
  // Signed length of (x_i - r) along r / |r|: negative for a row that pulls against the result's
  // direction; 0 when non-finite or when r = 0.
  std::vector<double> along;
  std::vector<char> non_finite;
};

// The outcome of a round from the chunk-summed final summaries.
inline RowPositions finish_outcome(const Plan& p, std::span<const double> total, std::size_t d,
                                   int n_all, RuleOutcome& outcome) {
  outcome.weight = p.weight;
  if (p.coordinate_weights)
    for (int i = 0; i < p.n; ++i) outcome.weight[i] = d > 0 ? total[i] / double(d) : 0.0;
  const double* sq = total.data() + p.n;
  const double* flags = sq + n_all;
  const double* inner = flags + n_all;
  const double norm_sq = inner[n_all];
  const double norm = std::sqrt(norm_sq);
  RowPositions rows{std::vector<double>(n_all), std::vector<double>(n_all, 0.0),
                    std::vector<char>(n_all)};
  for (int i = 0; i < n_all; ++i) {
    rows.non_finite[i] = flags[i] > 0 ? 1 : 0;
    rows.distance[i] = rows.non_finite[i] ? kInf : std::sqrt(sq[i]);
    if (!rows.non_finite[i] && norm > 0 && std::isfinite(norm))
      rows.along[i] = (inner[i] - norm_sq) / norm;
  }
  return rows;
}

// What a round reports per row (all n_all rows, in input order): the rule's weight (0 for
// excluded rows) and the row's position relative to the result.
struct RoundReport {
  std::vector<double> weight, distance, along;
  std::vector<char> non_finite;
};

// Rows in the engine's order: active ones (ascending), then excluded ones (ascending).
inline std::vector<int> engine_order(std::span<const char> active, int n_all, int* n_active) {
  std::vector<int> order;
  for (int i = 0; i < n_all; ++i)
    if (active.empty() || active[i]) order.push_back(i);
  *n_active = int(order.size());
  for (int i = 0; i < n_all; ++i)
    if (!active.empty() && !active[i]) order.push_back(i);
  return order;
}

// Maps the engine's outcome (active rows first) back to input order.
inline RoundReport to_report(const std::vector<int>& order, int n_active,
                             const RuleOutcome& outcome, const RowPositions& rows) {
  const std::size_t n_all = order.size();
  RoundReport r{std::vector<double>(n_all, 0.0), std::vector<double>(n_all),
                std::vector<double>(n_all), std::vector<char>(n_all)};
  for (std::size_t k = 0; k < n_all; ++k) {
    if (int(k) < n_active) r.weight[order[k]] = outcome.weight[k];
    r.distance[order[k]] = rows.distance[k];
    r.along[order[k]] = rows.along[k];
    r.non_finite[order[k]] = rows.non_finite[k];
  }
  return r;
}

// Every phase of every chunk in this process: rows is n_all x d (row-major), `active` marks the
// rows the rule aggregates (empty: all). Writes the d results to `out`; without `report` (no
// ledger reads it) the per-row report stays empty and its distance pass is skipped.
template <class R, class T>
RoundReport run_local(Rule rule, const RuleParams& params, std::span<const R> rows, int n_all,
                      std::size_t d, int chunks, std::span<const char> active, T* out,
                      bool report = true) {
  int n = 0;
  const std::vector<int> order = engine_order(active, n_all, &n);
  const Chunking ch{d, chunks};
  auto view = [&](int c, int count) {
    ChunkRows<R> v;
    v.len = ch.size(c);
    for (int k = 0; k < count; ++k) v.rows.push_back(rows.data() + order[k] * d + ch.begin(c));
    return v;
  };
  std::vector<double> total(phase1_size(rule, params.nnm, n), 0.0), part(total.size());
  for (int c = 0; c < chunks && !total.empty(); ++c) {
    phase1(view(c, n), rule, params.nnm, part.data());
    accumulate(total, part);
  }
  Plan plan = plan_after_phase1(rule, params, n, total);
  std::vector<std::vector<double>> centers(chunks);
  std::vector<double> mixed;
  if (needs_center(rule)) {
    total.assign(phase2_size(n), 0.0);
    part.resize(total.size());
    for (int c = 0; c < chunks; ++c) {
      const ChunkRows<R> x = view(c, n);
      phase2(plan, rule_rows(plan, x, mixed), centers[c], part.data());
      accumulate(total, part);
    }
    plan_after_phase2(plan, total);
  }
  total.assign(report ? final_size(n, n_all) : 0, 0.0);
  part.resize(total.size());
  for (int c = 0; c < chunks; ++c) {
    const ChunkRows<R> x = view(c, n);
    finish_chunk(plan, rule_rows(plan, x, mixed), centers[c], view(c, n_all), out + ch.begin(c),
                 report ? part.data() : nullptr);
    accumulate(total, part);
  }
  if (!report) return {};
  RuleOutcome outcome;
  const RowPositions positions = finish_outcome(plan, total, d, n_all, outcome);
  return to_report(order, n, outcome, positions);
}

}  // namespace daa::robust::engine
