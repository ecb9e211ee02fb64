// Forward and backward of the MoE classifier (see moe_model.hpp): an input layer, pre-norm blocks
// around MoeLayer (moe_layer.hpp) with residual adds, and the classifier head with its loss.
#include "daa/model/moe_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "daa/core/error.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/kernels/nn_kernels.hpp"

namespace daa::model {

using kernels::Matrix;
using kernels::MemSpace;
using kernels::Trans;
using kernels::Vector;
using IntMatrix = Kokkos::View<int**, Kokkos::LayoutRight, MemSpace>;
using IntVector = Kokkos::View<int*, MemSpace>;

ModelShape shape_from_config(const core::Config& config, int inputs, int classes, int ep_size,
                             int ep_rank) {
  ModelShape s;
  s.inputs = inputs;
  s.classes = classes;
  s.d_model = config.model.d_model;
  s.moe_layers = config.model.moe_layers;
  s.rmsnorm = config.model.norm == core::NormKind::rmsnorm;
  s.init_std = config.model.init_std;
  s.seed = config.run.seed;
  s.moe = moe_shape_from_config(config, ep_size, ep_rank);
  // The classifier's experts are GELU MLPs (core::validate refuses [moe] ffn = "swiglu" for it);
  // classifier_stage_costs and its checkpoints count on that.
  s.moe.ffn = ExpertFfn::gelu;
  return s;
}

parallel::StageCosts classifier_stage_costs(const core::Config& config, int inputs, int classes) {
  const double d = config.model.d_model, e = config.moe.experts, f = config.moe.d_ff;
  const double block = d + d * e + e * (2 * d * f + f + d);  // norm, router, experts
  return {.blocks = std::vector<double>(std::size_t(config.model.moe_layers), block),
          .first = double(inputs) * d + d,
          .last = d * double(classes) + double(classes)};
}

template <class T>
struct MoeModel<T>::Workspace {
  // One MoE block this rank holds: pre-norm, then the MoE layer; the residual add is the model's.
  struct Block {
    int norm_gain = -1;
    MoeLayer<T> moe;
  };
  // What one block's forward saves for its backward, besides what its layers keep.
  struct BlockState {
    Matrix<T> normed{"normed", 0, 0};
    Vector<T> inv_rms{"inv_rms", 0};
  };
  // One micro-batch in flight: its input and everything its backward needs.
  struct Slot {
    std::size_t n = 0;
    Matrix<T> input{"input", 0, 0};  // x (first stage) or the previous stage's output
    std::vector<BlockState> blocks;
    std::vector<Matrix<T>> residual;  // residual[l]: input of held block l; [blocks]: output
    Matrix<T> input_pre{"input_pre", 0, 0};
    Matrix<T> logits{"logits", 0, 0};
    Matrix<T> dlogits{"dlogits", 0, 0};
    Matrix<T> input_grad{"input_grad", 0, 0};  // gradient sent to the previous stage
    std::vector<MoeStats> moe;                 // per held block, for backward's timings
  };
  int w_in = -1, b_in = -1, w_out = -1, b_out = -1;
  std::vector<Block> blocks;
  std::vector<Slot> slots;
  Matrix<T> block_out{"block_out", 0, 0};
  // Backward scratch, shared by the blocks.
  Matrix<T> dres{"dres", 0, 0}, dnormed{"dnormed", 0, 0};
  Vector<T> row_loss{"row_loss", 0};
  IntVector row_correct{"row_correct", 0};

  Slot& slot(std::size_t i) {
    if (slots.size() <= i) slots.resize(i + 1);
    return slots[i];
  }
};

template <class T>
MoeModel<T>::MoeModel(const ModelShape& shape, const parallel::Communicator* expert_group)
    : shape_(shape), expert_group_(expert_group), ws_(std::make_unique<Workspace>()) {
  const MoeShape& moe = shape.moe;
  validate(moe, "model::MoeModel");
  if (moe.d_model != shape.d_model)
    throw Error("model::MoeModel: the MoE layers' d_model differs from the model's");
  if (moe.ep_size > 1 &&
      (!expert_group || expert_group->size() != moe.ep_size || expert_group->rank() != moe.ep_rank))
    throw Error("model::MoeModel: expert parallelism needs the expert-parallel communicator");
  const std::size_t d = shape.d_model;
  Workspace& w = *ws_;
  const int blocks = shape.held_blocks();
  if (shape.has_input()) {
    w.w_in = params_.declare(weight_info("input.w", shape.inputs, d));
    w.b_in = params_.declare(vector_info("input.b", d, ParamInit::zeros));
  }
  w.blocks.reserve(std::size_t(blocks));
  for (int b = 0; b < blocks; ++b) {
    const int l = shape.first_block + b;
    const std::string name = "moe" + std::to_string(l);
    const int gain =
        shape.rmsnorm
            ? params_.declare(vector_info(name + ".norm.gain", d, ParamInit::ones, {.layer = l}))
            : -1;
    w.blocks.push_back({gain, MoeLayer<T>(params_, name, l, moe, expert_group)});
  }
  if (shape.has_classifier()) {
    w.w_out = params_.declare(weight_info("classifier.w", d, shape.classes));
    w.b_out = params_.declare(vector_info("classifier.b", shape.classes, ParamInit::zeros));
  }
  params_.allocate();
  initialize();
}

template <class T>
MoeModel<T>::~MoeModel() = default;

template <class T>
void MoeModel<T>::initialize() {
  params_.initialize(shape_.seed, [&](const ParamInfo& p) {
    return shape_.init_std > 0 ? shape_.init_std : 1.0 / std::sqrt(double(p.rows));
  });
}

template <class T>
kernels::Matrix<T> MoeModel<T>::logits() const {
  return ws_->slot(0).logits;
}

template <class T>
kernels::Vector<T> MoeModel<T>::routing_bias(int layer) const {
  return ws_->blocks.at(std::size_t(layer - shape_.first_block)).moe.routing_bias();
}

template <class T>
kernels::Matrix<T> MoeModel<T>::output(int slot) const {
  return ws_->slot(slot).residual.back();
}

template <class T>
kernels::Matrix<T> MoeModel<T>::input_grad(int slot) const {
  return ws_->slot(slot).input_grad;
}

template <class T>
BatchStats MoeModel<T>::run(const Matrix<T>& x, const IntVector& labels, bool train,
                            const StatsReducer& reduce_stats, const RoutingObserver& observer) {
  if (!shape_.has_input() || !shape_.has_classifier())
    throw Error("model::MoeModel::run: a pipeline stage runs forward() and backward()");
  BatchStats stats = forward(0, x, labels, train, reduce_stats, observer);
  if (train) backward(0, Matrix<T>("none", 0, 0), stats);
  return stats;
}

template <class T>
BatchStats MoeModel<T>::forward(int slot_index, const Matrix<T>& input, const IntVector& labels,
                                bool train, const StatsReducer& reduce_stats,
                                const RoutingObserver& observer) {
  Workspace& w = *ws_;
  const ModelShape& s = shape_;
  auto& slot = w.slot(std::size_t(slot_index));
  const std::size_t n = input.extent(0), d = s.d_model;
  const std::size_t width = s.has_input() ? std::size_t(s.inputs) : d;
  if (input.extent(1) != width || (s.has_classifier() && labels.extent(0) != n))
    throw Error("model::MoeModel::forward: batch shape [" + std::to_string(n) + ", " +
                std::to_string(input.extent(1)) + "] does not match the stage's input width " +
                std::to_string(width));
  const int blocks = s.held_blocks();
  BatchStats stats;
  stats.samples = s.has_classifier() ? std::int64_t(n) : 0;
  stats.layers.resize(blocks);
  const auto& P = params_;
  slot.n = n;
  slot.input = input;
  slot.blocks.resize(blocks);
  slot.moe.assign(blocks, MoeStats{});
  slot.residual.resize(blocks + 1);

  for (std::size_t r = s.has_input() ? 0 : 1; r < slot.residual.size(); ++r)
    kernels::ensure_extent(slot.residual[r], n, d);
  if (s.has_input()) {
    kernels::ensure_extent(slot.input_pre, n, d);
    kernels::gemm(Trans::no, Trans::no, T(1), input, P.value(w.w_in), T(0), slot.input_pre);
    kernels::add_bias(slot.input_pre, P.value_vec(w.b_in));
    kernels::gelu_forward(slot.input_pre, slot.residual[0]);
  } else {
    slot.residual[0] = input;  // the previous stage's output, kept alive by the caller
  }

  kernels::ensure_extent(w.block_out, n, d);
  for (int l = 0; l < blocks; ++l) {
    auto& block = w.blocks[std::size_t(l)];
    auto& B = slot.blocks[std::size_t(l)];
    const Matrix<T>& h = slot.residual[l];
    kernels::ensure_extent(B.normed, n, d);
    kernels::ensure_extent(B.inv_rms, n);
    if (s.rmsnorm)
      kernels::rmsnorm_forward(h, P.value_vec(block.norm_gain), T(1e-5), B.normed, B.inv_rms);
    else
      Kokkos::deep_copy(B.normed, h);
    const MoeStats moe =
        block.moe.forward(slot_index, B.normed, w.block_out, train, reduce_stats, observer);
    stats.layers[l] = moe;
    stats.aux_loss += moe.aux_loss + moe.z_loss;
    stats.expert_seconds += moe.expert_seconds;
    stats.expert_flops += moe.expert_flops;
    stats.dispatch_seconds += moe.dispatch_seconds;
    kernels::residual_add(slot.residual[l + 1], h, w.block_out);
  }
  if (s.has_classifier()) {
    kernels::ensure_extent(slot.logits, n, s.classes);
    kernels::gemm(Trans::no, Trans::no, T(1), slot.residual[blocks], P.value(w.w_out), T(0),
                  slot.logits);
    kernels::add_bias(slot.logits, P.value_vec(w.b_out));

    kernels::ensure_extent(w.row_loss, n);
    kernels::ensure_extent(w.row_correct, n);
    if (train) kernels::ensure_extent(slot.dlogits, n, s.classes);
    kernels::cross_entropy(slot.logits, labels, T(1) / T(n),
                           train ? slot.dlogits : Matrix<T>("none", 0, 0), w.row_loss,
                           w.row_correct);
    auto loss_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), w.row_loss);
    auto correct_h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), w.row_correct);
    for (std::size_t t = 0; t < n; ++t) {
      stats.loss_sum += double(loss_h(t));
      stats.correct += correct_h(t);
    }
  }
  return stats;
}

template <class T>
void MoeModel<T>::backward(int slot_index, const Matrix<T>& grad_output, BatchStats& stats) {
  Workspace& w = *ws_;
  const ModelShape& s = shape_;
  auto& slot = w.slot(std::size_t(slot_index));
  const std::size_t n = slot.n, d = s.d_model;
  const int blocks = s.held_blocks();
  const auto& P = params_;

  // dres: the gradient w.r.t. the stage's output.
  kernels::ensure_extent(w.dres, n, d);
  if (s.has_classifier()) {
    kernels::gemm(Trans::yes, Trans::no, T(1), slot.residual[blocks], slot.dlogits, T(1),
                  P.grad(w.w_out));
    kernels::accumulate_bias_grad(slot.dlogits, P.grad_vec(w.b_out));
    kernels::gemm(Trans::no, Trans::yes, T(1), slot.dlogits, P.value(w.w_out), T(0), w.dres);
  } else {
    if (grad_output.extent(0) != n || grad_output.extent(1) != d)
      throw Error("model::MoeModel::backward: output gradient is [" +
                  std::to_string(grad_output.extent(0)) + ", " +
                  std::to_string(grad_output.extent(1)) + "], expected [" + std::to_string(n) +
                  ", " + std::to_string(d) + "]");
    Kokkos::deep_copy(w.dres, grad_output);
  }

  kernels::ensure_extent(w.dnormed, n, d);
  for (int l = blocks - 1; l >= 0; --l) {
    auto& block = w.blocks[std::size_t(l)];
    auto& B = slot.blocks[std::size_t(l)];
    // dres is the gradient w.r.t. residual[l+1] = residual[l] + moe(norm(residual[l])).
    MoeStats& moe = slot.moe[std::size_t(l)];
    moe = MoeStats{};
    block.moe.backward(slot_index, w.dres, w.dnormed, GradMode::overwrite, moe);
    stats.expert_seconds += moe.expert_seconds;
    stats.expert_flops += moe.expert_flops;
    stats.dispatch_seconds += moe.dispatch_seconds;
    // Through the norm into the residual stream: dres (for residual[l]) += norm'(dnormed).
    if (s.rmsnorm)
      kernels::rmsnorm_backward(slot.residual[l], P.value_vec(block.norm_gain), B.inv_rms,
                                w.dnormed, w.dres, P.grad_vec(block.norm_gain));
    else
      write_grad(w.dres, w.dnormed, GradMode::accumulate);
  }
  if (s.has_input()) {
    // Input layer: dres is now d(residual[0]) = d gelu(input_pre).
    kernels::gelu_backward(slot.input_pre, w.dres);
    kernels::gemm(Trans::yes, Trans::no, T(1), slot.input, w.dres, T(1), P.grad(w.w_in));
    kernels::accumulate_bias_grad(w.dres, P.grad_vec(w.b_in));
  } else {
    // For the previous stage; a copy per slot, since its send may still be in flight.
    kernels::ensure_extent(slot.input_grad, n, d);
    Kokkos::deep_copy(slot.input_grad, w.dres);
  }
  Kokkos::fence();
}

template class MoeModel<float>;
template class MoeModel<double>;

}  // namespace daa::model
