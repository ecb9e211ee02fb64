// The simulated Byzantine attacks (see daa/robust/attacks.hpp for the definitions). Every random
// draw is keyed by (seed, round, rank, coordinate) and the loops are plain and sequential, so an
// attacked run is repeatable bit for bit whatever the thread count or rank layout.
#include "daa/robust/attacks.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "name_table.hpp"

namespace daa::robust {
namespace {

using core::counter_bits;
using core::counter_normal;
using core::counter_uniform;
using core::RngPurpose;

constexpr NameOf<Attack> kAttackNames[] = {
    {Attack::none, "none"},
    {Attack::sign_flip, "sign-flip"},
    {Attack::inner_product, "inner-product"},
    {Attack::little_is_enough, "little-is-enough"},
    {Attack::gaussian, "gaussian"},
    {Attack::label_flip, "label-flip"},
    {Attack::bit_flip, "bit-flip"},
    {Attack::nan, "nan"},
    {Attack::inf, "inf"},
    {Attack::mimic, "mimic"},
};

// std::to_string prints 6 fixed decimals, which turns 1e-9 into "0.000000"; the message must show
// the value the user actually gave.
std::string number(double x) {
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, x).ptr;  // shortest round-trip form
  return std::string(buf, end);
}

// The standard library has no inverse normal CDF. Acklam's rational approximation alone is good to
// 1.15e-9 relative; one Halley step on Phi(x) - p takes it to about machine precision, so z
// matches the published values. p in (0, 1).
double inverse_normal_cdf(double p) {
  constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                          1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                          6.680131188771972e+01, -1.328068155288572e+01};
  constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                          -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                          3.754408661907416e+00};
  constexpr double p_low = 0.02425;
  auto tail = [&](double q) {
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  };
  double x;
  if (p < p_low) {
    x = tail(std::sqrt(-2.0 * std::log(p)));
  } else if (p > 1.0 - p_low) {
    x = -tail(std::sqrt(-2.0 * std::log1p(-p)));
  } else {
    const double q = p - 0.5;
    const double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
  }
  // erfc rather than 1 + erf keeps the lower tail's residual accurate.
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2.0 * 3.141592653589793) * std::exp(0.5 * x * x);
  return x - u / (1.0 + 0.5 * x * u);
}

// The stream gives each (round, rank) its own sequence: 2^20 ranks per round is far beyond any
// layout we run, and it keeps the indices free to be the coordinate.
std::uint64_t attack_stream(std::uint64_t round, int rank) {
  return (round << 20) + static_cast<std::uint64_t>(rank);
}

// An omniscient attack handed the wrong view is a bug in the caller, not a user error.
void require_view(Attack attack, const char* what, std::span<const float> view, size_t d) {
  if (view.size() != d) {
    throw Error(std::string("attack ") + to_string(attack) + ": the honest " + what + " has " +
                std::to_string(view.size()) + " values for a contribution of " + std::to_string(d));
  }
}

}  // namespace

Attack parse_attack(const std::string& name) {
  return parse_name<Attack>(kAttackNames, name, "attack", "attacks");
}

const char* to_string(Attack attack) {
  return name_of<Attack>(kAttackNames, attack);
}

void check_attack_params(Attack attack, const AttackParams& params) {
  auto fail = [&](const char* param, double value, const char* rule) {
    throw ConfigError(std::string("attack ") + to_string(attack) + ": " + param + " = " +
                      number(value) + " " + rule);
  };
  // Only the attack's own parameter is checked: the others keep their defaults unused.
  switch (attack) {
    case Attack::sign_flip:
      if (!std::isfinite(params.sign_flip_scale)) {
        fail("sign_flip_scale", params.sign_flip_scale, "must be finite");
      }
      return;
    case Attack::inner_product:
      if (!std::isfinite(params.epsilon) || params.epsilon < 0.0) {
        fail("epsilon", params.epsilon, "must be finite and >= 0");
      }
      return;
    case Attack::little_is_enough:
      if (!std::isfinite(params.z) || params.z < 0.0) {
        fail("z", params.z, "must be finite and >= 0 (0 means from n and f)");
      }
      return;
    case Attack::gaussian:
      if (!std::isfinite(params.sigma) || params.sigma < 0.0) {
        fail("sigma", params.sigma, "must be finite and >= 0");
      }
      return;
    case Attack::bit_flip:
      // Written so that NaN fails too.
      if (!(params.bitflip_rate >= 0.0 && params.bitflip_rate <= 1.0)) {
        fail("bitflip_rate", params.bitflip_rate, "must be in [0, 1]");
      }
      return;
    case Attack::none:
    case Attack::label_flip:
    case Attack::nan:
    case Attack::inf:
    case Attack::mimic:
      return;
  }
}

double little_is_enough_z(int n, int f) {
  if (n < 1 || f < 0 || f >= n) {
    throw ConfigError("little-is-enough needs n >= 1 and 0 <= f < n; got n = " + std::to_string(n) +
                      ", f = " + std::to_string(f));
  }
  // With a Byzantine majority s would drop to 0 or below and z to +inf, which is just the inf
  // attack; keep one honest value beyond the attacked one so the attack stays a finite shift.
  const int s = std::max(1, n / 2 + 1 - f);
  const double p = static_cast<double>(n - s) / n;
  // p <= 1/2 would ask for z <= 0, a shift to the other side of the mean; the attack is defined
  // as mu - z * sigma with z >= 0, so the closest admissible choice is z = 0 (send the mean).
  if (p <= 0.5) return 0.0;
  return inverse_normal_cdf(p);
}

bool needs_honest_moments(Attack attack) {
  return attack == Attack::inner_product || attack == Attack::little_is_enough;
}

bool needs_honest_copy(Attack attack) {
  return attack == Attack::mimic;
}

void apply_attack(Attack attack, const AttackParams& params, std::span<float> contribution,
                  const HonestView& honest, int n, int f, std::uint64_t round, int rank) {
  check_attack_params(attack, params);
  const size_t d = contribution.size();
  if (needs_honest_moments(attack)) require_view(attack, "mean", honest.mean, d);
  if (attack == Attack::little_is_enough) require_view(attack, "stddev", honest.stddev, d);
  if (needs_honest_copy(attack)) require_view(attack, "copy", honest.copy, d);

  const std::uint64_t stream = attack_stream(round, rank);
  switch (attack) {
    case Attack::none:
    case Attack::label_flip:  // poisoned upstream by training on flip_label's labels
      return;
    case Attack::sign_flip:
      for (float& g : contribution) g = static_cast<float>(-params.sign_flip_scale * g);
      return;
    case Attack::inner_product:
      for (size_t i = 0; i < d; ++i) {
        contribution[i] = static_cast<float>(-params.epsilon * honest.mean[i]);
      }
      return;
    case Attack::little_is_enough: {
      const double z = params.z == 0.0 ? little_is_enough_z(n, f) : params.z;
      for (size_t i = 0; i < d; ++i) {
        contribution[i] = static_cast<float>(honest.mean[i] - z * honest.stddev[i]);
      }
      return;
    }
    case Attack::gaussian:
      for (size_t i = 0; i < d; ++i) {
        contribution[i] = static_cast<float>(
            params.sigma * counter_normal(params.seed, RngPurpose::attack, stream, i));
      }
      return;
    case Attack::bit_flip:
      // Decision and bit position come from distinct indices so they are independent draws.
      for (size_t i = 0; i < d; ++i) {
        if (counter_uniform(params.seed, RngPurpose::attack, stream, 2 * i) >=
            params.bitflip_rate) {
          continue;
        }
        const auto bit = static_cast<unsigned>(
            counter_bits(params.seed, RngPurpose::attack, stream, 2 * i + 1) % 32);
        contribution[i] =
            std::bit_cast<float>(std::bit_cast<std::uint32_t>(contribution[i]) ^ (1u << bit));
      }
      return;
    case Attack::nan:
      for (float& g : contribution) g = std::numeric_limits<float>::quiet_NaN();
      return;
    case Attack::inf:
      for (float& g : contribution) g = std::numeric_limits<float>::infinity();
      return;
    case Attack::mimic:
      for (size_t i = 0; i < d; ++i) contribution[i] = honest.copy[i];
      return;
  }
}

int flip_label(int label, int classes) {
  if (classes < 1 || label < 0 || label >= classes) {
    throw Error("flip_label: label " + std::to_string(label) + " outside [0, " +
                std::to_string(classes) + ")");
  }
  return classes - 1 - label;
}

}  // namespace daa::robust
