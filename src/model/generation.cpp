// Incremental decoding and sampling (see generation.hpp): the block loop of
// LanguageModel::forward, run on the new rows only, with attention against the key/value caches
// through the kernels of decode_kernels.hpp.
#include "daa/model/generation.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"
#include "daa/kernels/decode_kernels.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/kernels/nn_kernels.hpp"
#include "daa/model/embedding.hpp"
#include "daa/model/linear.hpp"
#include "daa/model/norms.hpp"

namespace daa::model {

using kernels::Matrix;
using kernels::Trans;

namespace {

template <class T>
int sample_impl(std::span<const T> logits, double temperature, int top_k, std::uint64_t seed,
                std::int64_t position) {
  if (logits.empty()) throw InputError("model::sample: empty logits");
  if (!(temperature >= 0) || !std::isfinite(temperature))
    throw InputError(
        fmt::format("model::sample: temperature {} must be finite and >= 0", temperature));
  if (top_k < 0) throw InputError(fmt::format("model::sample: top_k {} must be >= 0", top_k));
  const std::size_t vocab = logits.size();
  std::size_t best = 0;
  for (std::size_t i = 0; i < vocab; ++i) {
    const double l = double(logits[i]);
    if (std::isnan(l) || l == HUGE_VAL)
      throw Error(fmt::format("model::sample: logit {} of token {} is not a number", l, i));
    if (logits[i] > logits[best]) best = i;
  }
  if (temperature == 0 || top_k == 1) return int(best);

  // Candidates in a fixed order: the whole vocabulary by index, or the top_k by descending logit
  // with ties towards the lower index.
  std::vector<std::size_t> candidates(vocab);
  std::iota(candidates.begin(), candidates.end(), std::size_t(0));
  if (top_k > 0 && std::size_t(top_k) < vocab) {
    const auto before = [&](std::size_t a, std::size_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::partial_sort(candidates.begin(), candidates.begin() + top_k, candidates.end(), before);
    candidates.resize(std::size_t(top_k));
  }
  const double top = double(logits[best]);
  std::vector<double> weight(candidates.size());
  double total = 0;
  for (std::size_t c = 0; c < candidates.size(); ++c) {
    weight[c] = std::exp((double(logits[candidates[c]]) - top) / temperature);
    total += weight[c];
  }
  const double u =
      core::counter_uniform(seed, core::RngPurpose::sample, 0, std::uint64_t(position)) * total;
  double cumulative = 0;
  std::size_t chosen = candidates.size();
  for (std::size_t c = 0; c < candidates.size(); ++c) {
    if (weight[c] <= 0) continue;
    chosen = c;  // the last candidate with weight, should rounding leave u beyond the sum
    cumulative += weight[c];
    if (u < cumulative) break;
  }
  if (chosen == candidates.size())
    throw Error("model::sample: every logit is -inf, no token can be drawn");
  return int(candidates[chosen]);
}

}  // namespace

int sample(std::span<const float> logits, double temperature, int top_k, std::uint64_t seed,
           std::int64_t position) {
  return sample_impl(logits, temperature, top_k, seed, position);
}

int sample(std::span<const double> logits, double temperature, int top_k, std::uint64_t seed,
           std::int64_t position) {
  return sample_impl(logits, temperature, top_k, seed, position);
}

template <class T>
Generator<T>::Generator(LanguageModel<T>& model, int slot)
    : model_(&model), layers_(model.layers()), slot_(slot), capacity_(model.shape().seq_len) {
  const LanguageModelShape& s = model.shape();
  if (!s.has_embedding() || !s.has_head())
    throw Error(fmt::format(
        "model::Generator: the model holds blocks [{}, {}) of {}; generation needs the whole "
        "model (embedding to head) in one process",
        s.first_block, s.end_block(), s.layers));
  if (slot < 0) throw Error(fmt::format("model::Generator: slot {} must be >= 0", slot));
  const auto d = std::size_t(s.d_model);
  caches_.resize(layers_.blocks.size());
  for (Cache& cache : caches_) {
    cache.k = Matrix<T>("kv_cache_k", std::size_t(capacity_), d);
    cache.v = Matrix<T>("kv_cache_v", std::size_t(capacity_), d);
  }
  // The attention layers' own tables, recomputed: same function, same arguments, same values.
  kernels::rope_tables(capacity_, s.d_model / s.heads, s.rope_base, rope_cos_, rope_sin_);
}

template <class T>
std::vector<T> Generator<T>::prefill(const std::vector<int>& prompt) {
  if (prompt.empty())
    throw InputError("model::Generator::prefill: the prompt is empty; it needs at least one token");
  if (prompt.size() > std::size_t(capacity_))
    throw InputError(
        fmt::format("model::Generator::prefill: the prompt of {} tokens is longer than the "
                    "model's seq_len {}",
                    prompt.size(), capacity_));
  position_ = 0;
  return advance(prompt, "prefill");
}

template <class T>
std::vector<T> Generator<T>::step(int token) {
  if (position_ == 0) throw Error("model::Generator::step: no prefill yet (the cache is empty)");
  if (full())
    throw InputError(
        fmt::format("model::Generator::step: the context is full ({} of seq_len {} positions); "
                    "generation stops here, it does not slide",
                    position_, capacity_));
  return advance({token}, "step");
}

template <class T>
Generated Generator<T>::generate(const std::vector<int>& prompt, int max_new_tokens,
                                 const SamplingOptions& options) {
  if (max_new_tokens < 0)
    throw InputError(
        fmt::format("model::Generator::generate: max_new_tokens {} must be >= 0", max_new_tokens));
  Generated result;
  std::vector<T> logits = prefill(prompt);
  while (int(result.tokens.size()) < max_new_tokens) {
    const int token = sample(std::span<const T>(logits), options.temperature, options.top_k,
                             options.seed, position_);
    result.tokens.push_back(token);
    if (int(result.tokens.size()) == max_new_tokens) break;
    if (full()) {
      result.context_full = true;
      break;
    }
    logits = step(token);
  }
  return result;
}

template <class T>
std::vector<T> Generator<T>::advance(const std::vector<int>& tokens, const char* where) {
  const LanguageModelShape& s = model_->shape();
  const ParamStore<T>& params = model_->params();
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= s.vocab)
      throw InputError(fmt::format(
          "model::Generator::{}: token {} at position {} is outside the vocabulary [0, {})", where,
          tokens[i], std::size_t(position_) + i, s.vocab));
  const std::size_t m = tokens.size(), d = std::size_t(s.d_model);
  const kernels::AttentionDims dims{
      .seq_len = capacity_, .heads = s.heads, .head_dim = s.d_model / s.heads};
  kernels::ensure_extent(tokens_, m);
  {
    auto host = Kokkos::create_mirror_view(tokens_);
    for (std::size_t i = 0; i < m; ++i) host(i) = tokens[i];
    Kokkos::deep_copy(tokens_, host);
  }
  kernels::ensure_extent(x_, m, d);
  kernels::ensure_extent(normed_, m, d);
  kernels::ensure_extent(qkv_, m, 3 * d);
  kernels::ensure_extent(attn_, m, d);
  kernels::ensure_extent(out_, m, d);
  kernels::ensure_extent(mid_, m, d);

  layers_.embedding->forward(slot_, tokens_, x_);
  for (std::size_t b = 0; b < layers_.blocks.size(); ++b) {
    const typename LanguageModel<T>::BlockLayers& block = layers_.blocks[b];
    // x + attention(norm(x)), the attention over the cached positions and these rows.
    block.attn_norm->forward(slot_, x_, normed_);
    Kokkos::fence();
    kernels::gemm(Trans::no, Trans::no, T(1), normed_, params.value(block.attention->wqkv_id()),
                  T(0), qkv_);
    kernels::rope_rotate_from(qkv_, dims, position_, rope_cos_, rope_sin_);
    kernels::append_kv(qkv_, position_, caches_[b].k, caches_[b].v);
    kernels::cached_attention(qkv_, dims, position_, caches_[b].k, caches_[b].v, attn_);
    Kokkos::fence();
    kernels::gemm(Trans::no, Trans::no, T(1), attn_, params.value(block.attention->wo_id()), T(0),
                  out_);
    kernels::residual_add(mid_, x_, out_);
    // mid + ffn(norm(mid)); the MoE forward is collective over the expert-parallel group.
    block.ffn_norm->forward(slot_, mid_, normed_);
    if (block.moe)
      block.moe->forward(slot_, normed_, out_, /*train=*/false);
    else
      block.dense->forward(slot_, normed_, out_);
    kernels::residual_add(x_, mid_, out_);
  }
  position_ += int(m);

  // The head on the last row only: earlier rows' logits are not asked for.
  kernels::ensure_extent(last_, 1, d);
  kernels::ensure_extent(last_normed_, 1, d);
  kernels::ensure_extent(logits_, 1, std::size_t(s.vocab));
  Kokkos::deep_copy(last_, Kokkos::subview(x_, std::make_pair(m - 1, m), Kokkos::ALL));
  layers_.final_norm->forward(slot_, last_, last_normed_);
  Kokkos::fence();
  if (layers_.head)
    layers_.head->forward(slot_, last_normed_, logits_);
  else
    layers_.embedding->head_forward(slot_, last_normed_, logits_);
  const auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), logits_);
  return std::vector<T>(host.data(), host.data() + host.size());
}

template class Generator<float>;
template class Generator<double>;

}  // namespace daa::model
