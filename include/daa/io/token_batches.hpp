// Batches of the language model from a token file: windows of seq_len + 1 consecutive tokens
// (inputs the first seq_len, targets shifted by one). Training windows start where the
// counter-based RNG says, keyed by (seed, step, sample), so a global batch does not depend on the
// rank layout; validation windows tile the validation stream in file order. Host vectors only:
// the trainer copies them to device views.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "daa/io/token_file.hpp"

namespace daa::io {

// `samples` windows, row-major [samples, seq_len] each.
struct TokenWindows {
  int seq_len = 0;
  std::int64_t samples = 0;
  std::vector<std::int32_t> tokens;
  std::vector<std::int32_t> targets;
  std::vector<std::int32_t> domains;  // domain of each target token
};

// [total * d / dp, total * (d + 1) / dp): the share of data-parallel index d of dp.
std::pair<std::int64_t, std::int64_t> rank_share(std::int64_t total, int d, int dp);

class TokenBatches {
 public:
  // Keeps a reference to `file`, which must outlive it. A split shorter than one window
  // (seq_len + 1 tokens) is a DataError naming the file.
  TokenBatches(const TokenFile& file, int seq_len, int global_batch, std::uint64_t seed);

  int seq_len() const { return seq_len_; }
  int global_batch() const { return global_batch_; }

  // First token of training sample `sample` of step `step`, uniform in [0, train - seq_len - 1].
  std::int64_t window_start(std::int64_t step, std::int64_t sample) const;
  // Samples [first, first + count) of a step's global batch (a micro-batch's slice, say).
  TokenWindows train_samples(std::int64_t step, std::int64_t first, std::int64_t count) const;
  // The share of data-parallel index d of dp: samples rank_share(global_batch, d, dp).
  TokenWindows train(std::int64_t step, int d, int dp) const;

  // Non-overlapping windows over the validation stream: window w's inputs are tokens
  // [w * seq_len, (w + 1) * seq_len), so every token after the first is a target exactly once.
  std::int64_t validation_windows() const;
  std::pair<std::int64_t, std::int64_t> validation_range(int d, int dp) const {
    return rank_share(validation_windows(), d, dp);
  }
  TokenWindows validation(std::int64_t first, std::int64_t count) const;

 private:
  const TokenFile& file_;
  int seq_len_;
  int global_batch_;
  std::uint64_t seed_;
};

}  // namespace daa::io
