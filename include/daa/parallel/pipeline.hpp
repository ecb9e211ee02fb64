// The pipeline schedule of one stage: one-forward-one-backward (1F1B) over the micro-batches of a
// training step, and forward-only for evaluation, with the stage-to-stage traffic (activations
// forward, their gradients back) done here and nowhere else. The model's work comes in as two
// callbacks, so training and evaluation share one schedule and no caller touches MPI.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "daa/kernels/views.hpp"
#include "daa/parallel/topology.hpp"
#include "daa/parallel/transport.hpp"

namespace daa::parallel {

// Seconds this rank spent waiting on stage-to-stage messages (communication, not compute).
struct PipelineTiming {
  double comm_seconds = 0;
};

class PipelineSchedule {
 public:
  using Matrix = kernels::Matrix<float>;
  // forward(micro, slot, received) runs the stage on micro-batch `micro` in slot `slot`;
  // `received` holds the previous stage's activations (empty on the first stage). It returns the
  // stage's output, which is sent to the next stage (ignored on the last) and must stay
  // unchanged until that slot's next forward.
  using Forward = std::function<Matrix(int micro, int slot, const Matrix& received)>;
  // backward(micro, slot, received_grad) gets the next stage's gradient of this stage's output
  // (empty on the last stage) and returns the gradient of its input, sent to the previous stage
  // (ignored on the first) and kept unchanged until that slot's next backward.
  using Backward = std::function<Matrix(int micro, int slot, const Matrix& received_grad)>;

  // `width` is the activation width between stages (d_model); messages travel through a
  // Transport over the world communicator in `mode` (see transport.hpp).
  PipelineSchedule(
      const Topology& topology, int width,
      TransportMode mode = default_transport_mode(host_accessible_v<kernels::MemSpace>));
  PipelineSchedule(const PipelineSchedule&) = delete;
  PipelineSchedule& operator=(const PipelineSchedule&) = delete;

  // Micro-batches in flight on one stage under 1F1B: min(micro_batches, stages).
  int slots(int micro_batches) const;

  // One training step: `micro_batches` micro-batches of `rows` rows each. Stage s runs
  // (stages - s - 1) forwards ahead, then alternates forward and backward, then drains; returns
  // once every send of the step has completed.
  void train_step(int micro_batches, std::size_t rows, const Forward& forward,
                  const Backward& backward, PipelineTiming& timing);

  // Forward only, one micro-batch of `rows` rows in slot 0 (evaluation); every stage calls it
  // with the same rows.
  void forward_only(std::size_t rows, const Forward& forward, PipelineTiming& timing);

 private:
  const Topology& topology_;
  int width_;
  std::vector<Matrix> received_, received_grad_;
  Transport<> transport_;
  // [2 * slot]: activations, [2 * slot + 1]: gradients; a send still in flight when the schedule
  // is destroyed (an exception left a step midway) is cancelled by its PendingSend.
  std::vector<Transport<>::PendingSend> sends_;
};

}  // namespace daa::parallel
