// The robust aggregation rules (see daa/robust/rules.hpp for the definitions and tie-breaks).
// Pure host code with a fixed order of every sum and stable sorts, so every rank that runs it on
// the same input gets the same bits.
#include "daa/robust/rules.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "daa/core/error.hpp"
#include "name_table.hpp"
#include "round_engine.hpp"

namespace daa::robust {
namespace {

constexpr NameOf<Rule> kRuleNames[] = {
    {Rule::mean, "mean"},
    {Rule::median, "median"},
    {Rule::trimmed_mean, "trimmed-mean"},
    {Rule::geometric_median, "geometric-median"},
    {Rule::krum, "krum"},
    {Rule::multi_krum, "multi-krum"},
    {Rule::bulyan, "bulyan"},
    {Rule::centered_clipping, "centered-clipping"},
};

}  // namespace

Rule parse_rule(const std::string& name) {
  return parse_name<Rule>(kRuleNames, name, "robust rule", "rules");
}

const char* to_string(Rule rule) {
  return name_of<Rule>(kRuleNames, rule);
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
  std::vector<double> out(static_cast<size_t>(d));
  const engine::RoundReport report =
      engine::run_local<double, double>(rule, params, rows, n, std::size_t(d), 1, {}, out.data());
  if (outcome) outcome->weight = report.weight;
  return out;
}

}  // namespace daa::robust
