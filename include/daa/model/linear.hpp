// Linear layer of the language model (issue 12): y = x W (+ b) over row-major [tokens, width]
// views, following the layer contract of layer.hpp (parameters in the store, state per slot).
// W is "<name>.w" [in, out], b "<name>.b" [out].
#pragma once

#include <string>

#include "daa/kernels/views.hpp"
#include "daa/model/layer.hpp"
#include "daa/model/params.hpp"

namespace daa::model {

template <class T>
class Linear {
 public:
  Linear(ParamStore<T>& store, const std::string& name, int in, int out, bool bias,
         const ParamPlace& place = {});

  // y [n, out] = x [n, in] W (+ b); x is kept by handle until backward(slot).
  void forward(int slot, const kernels::Matrix<T>& x, const kernels::Matrix<T>& y);
  // grad W += x^T dy, grad b += column sums of dy; dx [n, in] = dy W^T (extent 0: not needed).
  void backward(int slot, const kernels::Matrix<T>& dy, const kernels::Matrix<T>& dx,
                GradMode mode = GradMode::overwrite);

  int in() const { return in_; }
  int out() const { return out_; }
  int weight_id() const { return w_; }
  int bias_id() const { return b_; }  // -1 without bias

 private:
  struct State {
    kernels::Matrix<T> x{"linear_x", 0, 0};
  };
  ParamStore<T>* store_;
  std::string name_;
  int in_, out_;
  int w_ = -1, b_ = -1;
  SlotStates<State> states_;
};

}  // namespace daa::model
