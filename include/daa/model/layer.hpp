// What every layer of model/ shares (DESIGN.md §4, issue 12): parameters declared into one
// ParamStore at construction, explicit forward/backward over row-major [tokens, width] views, and
// the state a backward needs saved per micro-batch slot, so several micro-batches can be in flight.
//
// The contract, for every layer class L<T> (T = float for training, double for gradient checks):
//  - L(ParamStore<T>& store, const std::string& name, ...shape..., const ParamPlace& place = {})
//    declares its tensors as "<name>.<tensor>" before store.allocate(); it keeps the store's
//    address and its tensor ids, never views of values (they exist only after allocate()).
//  - forward(slot, x, y, ...) writes y (sized by the caller) and saves what backward needs in
//    slot `slot`; inputs saved by handle (Kokkos views share memory) must not be overwritten by
//    the caller before backward(slot).
//  - backward(slot, dy, dx, GradMode) adds parameter gradients into store.grads() and writes (or,
//    with GradMode::accumulate, adds) the input gradient dx; dx with extent 0 means "not needed".
//  - No layer reads labels, domains or any task notion: what the MoE layer routes where is
//    reported through a callback (moe_layer.hpp), keyed by whatever the task chooses.
#pragma once

#include <cstddef>
#include <vector>

#include "daa/kernels/views.hpp"
#include "daa/model/params.hpp"

namespace daa::model {

// Whether backward overwrites the input gradient or adds to it (the residual stream adds).
enum class GradMode { overwrite, accumulate };

// Where a layer's parameters sit for sharding and checkpoints: dense (replicated over data
// parallelism) or one expert's (sharded by expert parallelism), and the MoE layer index they
// belong to (-1: none); tied_copy marks a copy of another stage's parameter (ParamInfo).
struct ParamPlace {
  ParamKind kind = ParamKind::dense;
  int layer = -1;
  int expert = -1;
  bool tied_copy = false;
};

// A weight matrix [rows, cols] (weight decay, scaled-normal init) or a vector (no decay).
inline ParamInfo weight_info(std::string name, std::size_t rows, std::size_t cols,
                             const ParamPlace& place = {}) {
  return ParamInfo{.name = std::move(name),
                   .kind = place.kind,
                   .layer = place.layer,
                   .expert = place.expert,
                   .rows = rows,
                   .cols = cols,
                   .decay = true,
                   .init = ParamInit::normal,
                   .tied_copy = place.tied_copy};
}
inline ParamInfo vector_info(std::string name, std::size_t size, ParamInit init,
                             const ParamPlace& place = {}) {
  return ParamInfo{.name = std::move(name),
                   .kind = place.kind,
                   .layer = place.layer,
                   .expert = place.expert,
                   .rows = size,
                   .cols = 1,
                   .decay = false,
                   .init = init,
                   .tied_copy = place.tied_copy};
}

// Per-slot saved state, grown on first use of a slot.
template <class State>
class SlotStates {
 public:
  State& operator[](int slot) {
    if (states_.size() <= std::size_t(slot)) states_.resize(std::size_t(slot) + 1);
    return states_[std::size_t(slot)];
  }

 private:
  std::vector<State> states_;
};

// dx = v (overwrite) or dx += v (accumulate), element-wise over matching [rows, cols] views.
template <class T, class Src>
void write_grad(const kernels::Matrix<T>& dx, const Src& v, GradMode mode) {
  if (mode == GradMode::overwrite) {
    Kokkos::deep_copy(dx, v);
    return;
  }
  const std::size_t cols = dx.extent(1);
  Kokkos::parallel_for(
      "write_grad_accumulate", kernels::Range(0, dx.extent(0)), KOKKOS_LAMBDA(const int i) {
        for (std::size_t j = 0; j < cols; ++j) dx(i, j) += v(i, j);
      });
}

}  // namespace daa::model
