// Row normalizations of the language model (issue 12): RMSNorm and LayerNorm over row-major
// [tokens, width] views, following the layer contract of layer.hpp. Both use eps = 1e-5 and a
// gain "<name>.gain" (ones at init); LayerNorm adds a bias "<name>.bias" (zeros at init).
#pragma once

#include <string>

#include "daa/kernels/views.hpp"
#include "daa/model/layer.hpp"
#include "daa/model/params.hpp"

namespace daa::model {

template <class T>
class RMSNorm {
 public:
  RMSNorm(ParamStore<T>& store, const std::string& name, int width, const ParamPlace& place = {});

  // y = x / sqrt(mean(x^2) + eps) * gain; x is kept by handle until backward(slot).
  void forward(int slot, const kernels::Matrix<T>& x, const kernels::Matrix<T>& y);
  void backward(int slot, const kernels::Matrix<T>& dy, const kernels::Matrix<T>& dx,
                GradMode mode = GradMode::overwrite);

  int width() const { return width_; }
  int gain_id() const { return gain_; }

 private:
  struct State {
    kernels::Matrix<T> x{"rmsnorm_x", 0, 0};
    kernels::Vector<T> inv_rms{"rmsnorm_inv_rms", 0};
  };
  ParamStore<T>* store_;
  std::string name_;
  int width_;
  int gain_ = -1;
  SlotStates<State> states_;
  kernels::Matrix<T> scratch_{"rmsnorm_scratch", 0, 0};  // dx when the caller needs none
};

template <class T>
class LayerNorm {
 public:
  LayerNorm(ParamStore<T>& store, const std::string& name, int width, const ParamPlace& place = {});

  // y = (x - mean) / sqrt(var + eps) * gain + bias; x is kept by handle until backward(slot).
  void forward(int slot, const kernels::Matrix<T>& x, const kernels::Matrix<T>& y);
  void backward(int slot, const kernels::Matrix<T>& dy, const kernels::Matrix<T>& dx,
                GradMode mode = GradMode::overwrite);

  int width() const { return width_; }
  int gain_id() const { return gain_; }
  int bias_id() const { return bias_; }

 private:
  struct State {
    kernels::Matrix<T> x{"layernorm_x", 0, 0};
    kernels::Vector<T> mean{"layernorm_mean", 0};
    kernels::Vector<T> inv_std{"layernorm_inv_std", 0};
  };
  ParamStore<T>* store_;
  std::string name_;
  int width_;
  int gain_ = -1, bias_ = -1;
  SlotStates<State> states_;
};

}  // namespace daa::model
