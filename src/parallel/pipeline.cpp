// 1F1B and forward-only pipeline schedules (see pipeline.hpp). Activations of micro-batch m go to
// the next stage with tag 2m, their gradients come back with tag 2m + 1; sends are non-blocking
// and a slot's send is waited for before the slot is reused.
#include "daa/parallel/pipeline.hpp"

#include <algorithm>

#include "daa/core/clock.hpp"
#include "daa/core/timeline.hpp"

namespace daa::parallel {
namespace {

using core::Clock;
using core::seconds_since;

void trace(const char* name, Clock::time_point begin) {
  core::Timeline::process().add(core::Track::pipeline, name, begin, Clock::now());
}

void check_count(std::size_t rows, int width) {
  mpi_count(rows * std::size_t(width),
            "parallel::PipelineSchedule: one micro-batch's activations (rows x width)");
}

}  // namespace

PipelineSchedule::PipelineSchedule(const Topology& topology, int width, TransportMode mode)
    : topology_(topology), width_(width), transport_(topology.world(), mode) {}

int PipelineSchedule::slots(int micro_batches) const {
  return std::min(micro_batches, topology_.layout().pipeline_stages);
}

void PipelineSchedule::train_step(int micro_batches, std::size_t rows, const Forward& forward,
                                  const Backward& backward, PipelineTiming& timing) {
  const int stages = topology_.layout().pipeline_stages, stage = topology_.place().stage;
  const bool first = stage == 0, last = stage == stages - 1;
  const int slot_count = slots(micro_batches);
  check_count(rows, width_);
  received_.resize(std::size_t(slot_count), Matrix("received", 0, 0));
  received_grad_.resize(std::size_t(slot_count), Matrix("received_grad", 0, 0));
  sends_.resize(2 * std::size_t(slot_count));
  const Matrix none("none", 0, 0);

  auto run_forward = [&](int micro) {
    const int slot = micro % slot_count;
    auto t = Clock::now();
    transport_.wait(sends_[2 * slot]);  // the slot's previous send
    if (!first) {
      kernels::ensure_extent(received_[slot], rows, std::size_t(width_));
      transport_.recv<float>(received_[slot], topology_.previous_stage_rank(), 2 * micro);
      trace("receive activations", t);
    }
    timing.comm_seconds += seconds_since(t);
    const Matrix out = forward(micro, slot, first ? none : received_[slot]);
    if (!last) {
      Kokkos::fence();
      transport_.isend<float>(out, topology_.next_stage_rank(), 2 * micro, sends_[2 * slot]);
    }
  };
  auto run_backward = [&](int micro) {
    const int slot = micro % slot_count;
    auto t = Clock::now();
    if (!last) {
      kernels::ensure_extent(received_grad_[slot], rows, std::size_t(width_));
      transport_.recv<float>(received_grad_[slot], topology_.next_stage_rank(), 2 * micro + 1);
      trace("receive gradients", t);
    }
    transport_.wait(sends_[2 * slot + 1]);
    timing.comm_seconds += seconds_since(t);
    const Matrix grad = backward(micro, slot, last ? none : received_grad_[slot]);
    if (!first) {
      Kokkos::fence();
      transport_.isend<float>(grad, topology_.previous_stage_rank(), 2 * micro + 1,
                              sends_[2 * slot + 1]);
    }
  };
  // 1F1B: stage s runs (stages - s - 1) forwards ahead, then alternates, then drains.
  const int warmup = std::min(stages - stage - 1, micro_batches);
  for (int micro = 0; micro < warmup; ++micro) run_forward(micro);
  for (int micro = warmup; micro < micro_batches; ++micro) {
    run_forward(micro);
    run_backward(micro - warmup);
  }
  for (int micro = micro_batches - warmup; micro < micro_batches; ++micro) run_backward(micro);
  const auto t = Clock::now();
  for (auto& send : sends_) transport_.wait(send);
  timing.comm_seconds += seconds_since(t);
  if (stages > 1) trace("wait for sends", t);
}

void PipelineSchedule::forward_only(std::size_t rows, const Forward& forward,
                                    PipelineTiming& timing) {
  const int stages = topology_.layout().pipeline_stages, stage = topology_.place().stage;
  check_count(rows, width_);
  received_.resize(std::max<std::size_t>(received_.size(), 1), Matrix("received", 0, 0));
  const auto t = Clock::now();
  if (stage > 0) {
    kernels::ensure_extent(received_[0], rows, std::size_t(width_));
    transport_.recv<float>(received_[0], topology_.previous_stage_rank(), 0);
  }
  timing.comm_seconds += seconds_since(t);
  const Matrix out = forward(0, 0, stage > 0 ? received_[0] : Matrix("none", 0, 0));
  if (stage + 1 < stages) {
    Kokkos::fence();
    const auto s = Clock::now();
    // A blocking send, as before: a send and its completion, through slot 0's (idle) send.
    sends_.resize(std::max<std::size_t>(sends_.size(), 2));
    transport_.isend<float>(out, topology_.next_stage_rank(), 0, sends_[0]);
    transport_.wait(sends_[0]);
    timing.comm_seconds += seconds_since(s);
  }
}

}  // namespace daa::parallel
