// AdamW (decoupled weight decay) over the flat parameter buffer, the warmup + cosine learning-rate
// schedule, and global-norm gradient clipping.
#pragma once

#include <cstdint>
#include <vector>

#include "daa/core/config.hpp"
#include "daa/model/params.hpp"
#include "daa/parallel/communicator.hpp"

namespace daa::train {

struct AdamWSettings {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// Linear warmup from lr/warmup to lr over `warmup` steps, then cosine decay to min_lr at `total`.
// `step` counts from 0 (the learning rate used by the first update is lr_at(0)).
double learning_rate(std::int64_t step, std::int64_t total, std::int64_t warmup, double lr,
                     double min_lr);

template <class T>
class AdamW {
 public:
  AdamW(const model::ParamStore<T>& params, const AdamWSettings& settings);

  // One update with the gradients in params.grads(); `step` counts from 1 (bias correction).
  void update(model::ParamStore<T>& params, double lr, std::int64_t step);

  kernels::Vector<T> first_moment() const { return m_; }
  kernels::Vector<T> second_moment() const { return v_; }

 private:
  AdamWSettings settings_;
  kernels::Vector<T> m_, v_;
  struct Segment {
    std::size_t begin, end;
    bool decay;  // weight decay applies to [begin, end)
  };
  std::vector<Segment> segments_;
};

// Sum of squares of the whole gradient, accumulated in double in a fixed order.
template <class T>
double gradient_norm_squared(const kernels::Vector<T>& grads);

// Which part of a sharded gradient this rank contributes to the global norm: elements
// [0, dense_size) are its dense parameters, the rest its expert shard. Replicas must not count
// twice, so exactly one rank per replica group sets each flag; `group` sums the parts over all
// ranks holding pieces of the model (null: this rank holds the whole model).
struct NormShares {
  std::size_t dense_size = std::size_t(-1);
  bool count_dense = true;
  bool count_expert = true;
  const parallel::Communicator* group = nullptr;
  // Adds the seconds spent in the norm's all-reduce (waiting for the slowest rank of `group`),
  // which callers count as communication, not compute.
  double* reduce_seconds = nullptr;
};

// Scales gradients so that the global norm is at most max_norm (0: never); returns the norm
// before. Every rank computes the same norm, the norm of the whole model.
template <class T>
double clip_gradients(const kernels::Vector<T>& grads, double max_norm,
                      const NormShares& shares = {});

}  // namespace daa::train
