// Text generation with the language model: incremental decoding with one key/value cache per
// attention layer (each new token costs one row through every layer, not a forward of the whole
// prefix), and sampling (greedy, temperature, top-k) from core's counter-based RNG keyed by
// (seed, position), so a seed names one text whatever the machine or rank layout.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "daa/kernels/views.hpp"
#include "daa/model/language_model.hpp"

namespace daa::model {

// How the next token is drawn from the logits.
struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy (argmax); else softmax(logits / temperature)
  int top_k = 0;             // keep the top_k largest logits only; 0: the whole vocabulary
  std::uint64_t seed = 1;
};

// The token drawn at sequence position `position` from `logits` [vocab]: the first index of the
// largest logit when temperature is 0 or top_k is 1; otherwise a draw from the softmax of
// logits / temperature over the top_k largest (ties towards the lower index), with the uniform
// number counter_uniform(seed, RngPurpose::sample, 0, position). Throws daa::InputError for a
// negative or non-finite temperature, a negative top_k or empty logits, daa::Error for NaN or
// +inf logits.
int sample(std::span<const float> logits, double temperature, int top_k, std::uint64_t seed,
           std::int64_t position);
int sample(std::span<const double> logits, double temperature, int top_k, std::uint64_t seed,
           std::int64_t position);

// What generate() produced: the new tokens (token i at position prompt.size() + i), and whether
// it stopped early because the context of seq_len positions was full.
struct Generated {
  std::vector<int> tokens;
  bool context_full = false;
};

// One sequence being decoded by a LanguageModel: the cache holds the rotated keys and the values
// of every attention layer for positions [0, position()), at most shape.seq_len (the model's
// rotary tables end there). A full context stops generation: step() refuses to go further, with a
// message saying so; there is no sliding window, since positions past seq_len were never trained.
//
// The logits equal those of LanguageModel::forward(train = false) over the whole prefix, up to
// rounding, as long as routing does not depend on the batch: with MoeShape::capacity_mode the
// experts' capacity, hence which token-slots drop, depends on how many tokens a forward carries.
//
// Expert parallelism (ep_size > 1): prefill() and step() call every MoE layer's forward, a
// collective over the expert-parallel group, so every rank of the group must call them in
// lockstep with the same tokens (a token all ranks agree on, e.g. sampled with the same seed from
// bit-identical logits, or broadcast by the caller). Input checks come before any collective, so
// a refused input throws on every rank alike.
template <class T>
class Generator {
 public:
  // `model` must hold the whole model (embedding to head) and outlive the generator. The layers
  // run on micro-batch slot `slot` and overwrite what a forward saved there: do not generate on a
  // slot whose backward is still pending.
  explicit Generator(LanguageModel<T>& model, int slot = 0);

  // Empties the cache, runs the prompt (1 to seq_len tokens) through the model and returns the
  // logits [vocab] of its last position, i.e. the distribution of the token at prompt.size().
  std::vector<T> prefill(const std::vector<int>& prompt);
  // Appends `token` at position() and returns the logits of the token after it. Needs a prefill
  // first and room in the context (position() < capacity()).
  std::vector<T> step(int token);
  // prefill(prompt), then up to max_new_tokens draws, each fed back with step(); the draw of the
  // token at position p uses sample(..., options.seed, p).
  Generated generate(const std::vector<int>& prompt, int max_new_tokens,
                     const SamplingOptions& options);

  int position() const { return position_; }  // tokens in the cache
  int capacity() const { return capacity_; }  // the model's seq_len
  bool full() const { return position_ >= capacity_; }
  void reset() { position_ = 0; }

 private:
  struct Cache {
    kernels::Matrix<T> k{"kv_cache_k", 0, 0};  // [capacity, d_model], after RoPE
    kernels::Matrix<T> v{"kv_cache_v", 0, 0};
  };
  // Runs tokens at positions [position_, position_ + size) and returns the last one's logits.
  std::vector<T> advance(const std::vector<int>& tokens, const char* where);

  LanguageModel<T>* model_;
  typename LanguageModel<T>::Layers layers_;
  int slot_;
  int capacity_;
  int position_ = 0;
  std::vector<Cache> caches_;  // per held block
  kernels::Matrix<T> rope_cos_{"rope_cos", 0, 0}, rope_sin_{"rope_sin", 0, 0};
  // Scratch for the rows of one call.
  TokenIds tokens_{"gen_tokens", 0};
  kernels::Matrix<T> x_{"gen_x", 0, 0}, normed_{"gen_normed", 0, 0}, qkv_{"gen_qkv", 0, 0};
  kernels::Matrix<T> attn_{"gen_attn", 0, 0}, out_{"gen_out", 0, 0}, mid_{"gen_mid", 0, 0};
  kernels::Matrix<T> last_{"gen_last", 0, 0}, last_normed_{"gen_last_normed", 0, 0};
  kernels::Matrix<T> logits_{"gen_logits", 0, 0};
};

extern template class Generator<float>;
extern template class Generator<double>;

}  // namespace daa::model
