// Token embedding of the language model (issue 12), usable also as the tied output head
// (logits = x table^T), following the layer contract of layer.hpp. The table is
// "<name>.table" [vocab, width]; the two uses keep separate state per slot.
#pragma once

#include <string>

#include "daa/kernels/views.hpp"
#include "daa/model/layer.hpp"
#include "daa/model/params.hpp"

namespace daa::model {

// Token ids on the execution space; a View<int*, MemSpace> converts to it implicitly.
using TokenView = Kokkos::View<const int*, kernels::MemSpace>;

template <class T>
class Embedding {
 public:
  Embedding(ParamStore<T>& store, const std::string& name, int vocab, int width,
            const ParamPlace& place = {});

  // y [n, width] = table[tokens]. Throws daa::Error naming the first token outside [0, vocab).
  // tokens are kept by handle until backward(slot).
  void forward(int slot, const TokenView& tokens, const kernels::Matrix<T>& y);
  // table grad[tokens[i]] += dy[i], deterministic for repeated tokens.
  void backward(int slot, const kernels::Matrix<T>& dy);

  // Tied output head: logits [n, vocab] = x [n, width] table^T; x is kept by handle until
  // head_backward(slot).
  void head_forward(int slot, const kernels::Matrix<T>& x, const kernels::Matrix<T>& logits);
  // table grad += dlogits^T x; dx [n, width] = dlogits table (extent 0: not needed).
  void head_backward(int slot, const kernels::Matrix<T>& dlogits, const kernels::Matrix<T>& dx,
                     GradMode mode = GradMode::overwrite);

  int vocab() const { return vocab_; }
  int width() const { return width_; }
  int table_id() const { return table_; }

 private:
  struct InputState {
    TokenView tokens;
  };
  struct HeadState {
    kernels::Matrix<T> x{"head_x", 0, 0};
  };
  ParamStore<T>* store_;
  std::string name_;
  int vocab_, width_;
  int table_ = -1;
  SlotStates<InputState> input_states_;
  SlotStates<HeadState> head_states_;
};

}  // namespace daa::model
