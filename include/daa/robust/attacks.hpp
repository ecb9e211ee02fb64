// Simulated Byzantine behaviour for evaluation (DESIGN.md §6): what a faulty or malicious rank
// puts into a collective round instead of its honest contribution. Pure host code on plain
// buffers; the collective code gathers the honest statistics that omniscient attacks need.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace daa::robust {

// Definitions (g: this rank's honest contribution, mu / sigma: coordinate-wise mean and standard
// deviation of the honest contributions of the round, n ranks, f tolerated):
// - none: g unchanged.
// - sign_flip: -scale * g.
// - inner_product (Xie et al. 2020, "inner-product manipulation"): -epsilon * mu.
// - little_is_enough (Baruch et al. 2019): mu - z * sigma, coordinate-wise; z from n and f
//   (little_is_enough_z) unless given.
// - gaussian: every value drawn from N(0, sigma^2), independent of g.
// - label_flip: g unchanged here; the rank trains on flipped labels (flip_label), so g is
//   already poisoned when it gets here.
// - bit_flip (silent data corruption): each value, with probability `bitflip_rate`, gets one of
//   its 32 bits flipped, the bit chosen uniformly.
// - nan / inf: every value replaced by quiet NaN / +Inf.
// - mimic (Karimireddy et al. 2022): a copy of one honest rank's contribution.
// Random draws come from the counter-based generator keyed by (seed, RngPurpose::attack,
// stream = (round << 20) + rank, index), so a run is repeatable and layout-independent.
enum class Attack {
  none,
  sign_flip,
  inner_product,
  little_is_enough,
  gaussian,
  label_flip,
  bit_flip,
  nan,
  inf,
  mimic
};

// "none", "sign-flip", "inner-product", "little-is-enough", "gaussian", "label-flip",
// "bit-flip", "nan", "inf", "mimic". An unknown name throws daa::ConfigError listing the known.
Attack parse_attack(const std::string& name);
const char* to_string(Attack attack);

struct AttackParams {
  double sign_flip_scale = 1.0;  // sign_flip: -scale * g
  double epsilon = 10.0;         // inner_product: -epsilon * mu
  double z = 0.0;                // little_is_enough: 0 means "from n and f"
  double sigma = 10.0;           // gaussian: standard deviation
  double bitflip_rate = 1e-3;    // bit_flip: probability per value
  std::uint64_t seed = 0;        // keys the random draws
};

// Throws daa::ConfigError naming the parameter when a value makes no sense for the attack
// (negative epsilon/sigma, bitflip_rate outside [0, 1], negative z).
void check_attack_params(Attack attack, const AttackParams& params);

// Baruch et al. 2019: s = floor(n / 2 + 1) - f; z = Phi^{-1}((n - s) / n), the largest z for
// which the attacked value still has s honest values farther from the mean. n >= 1, 0 <= f < n.
double little_is_enough_z(int n, int f);

// Whether the attack needs the round's honest mean and standard deviation (inner_product,
// little_is_enough) or one honest contribution (mimic).
bool needs_honest_moments(Attack attack);
bool needs_honest_copy(Attack attack);

// What an omniscient attacker knows about the round; spans empty when not needed.
struct HonestView {
  std::span<const float> mean;    // coordinate-wise mean of the honest contributions
  std::span<const float> stddev;  // coordinate-wise standard deviation (population)
  std::span<const float> copy;    // one honest contribution (mimic)
};

// Replaces `contribution` (this rank's honest value, d floats) in place by what the attack
// sends. `round` and `rank` key the random draws; n and f feed little_is_enough's z.
void apply_attack(Attack attack, const AttackParams& params, std::span<float> contribution,
                  const HonestView& honest, int n, int f, std::uint64_t round, int rank);

// label_flip's mapping: label -> classes - 1 - label.
int flip_label(int label, int classes);

}  // namespace daa::robust
