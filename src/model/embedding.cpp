// Token embedding and tied output head (see embedding.hpp): gather/scatter kernels of
// nn_kernels.hpp for the table lookup, the linalg adapter for the head's products.
#include "daa/model/embedding.hpp"

#include <fmt/format.h>

#include "daa/core/error.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/kernels/nn_kernels.hpp"

namespace daa::model {

using kernels::Matrix;
using kernels::Trans;

template <class T>
Embedding<T>::Embedding(ParamStore<T>& store, const std::string& name, int vocab, int width,
                        const ParamPlace& place)
    : store_(&store), name_(name), vocab_(vocab), width_(width) {
  if (vocab < 1 || width < 1)
    throw Error(fmt::format("model::Embedding: '{}' needs a positive vocab and width, got {} x {}",
                            name, vocab, width));
  table_ =
      store.declare(weight_info(name + ".table", std::size_t(vocab), std::size_t(width), place));
}

template <class T>
void Embedding<T>::forward(int slot, const TokenView& tokens, const Matrix<T>& y) {
  if (y.extent(0) != tokens.extent(0) || y.extent(1) != std::size_t(width_))
    throw Error(
        fmt::format("model::Embedding::forward: '{}' maps {} tokens to [{}, {}], got y "
                    "[{}, {}]",
                    name_, tokens.extent(0), tokens.extent(0), width_, y.extent(0), y.extent(1)));
  const int bad = kernels::first_token_outside(tokens, vocab_);
  if (bad < int(tokens.extent(0))) {
    // One element to the host, only on the error path.
    Kokkos::View<int, Kokkos::HostSpace> token("bad_token");
    Kokkos::deep_copy(token, Kokkos::subview(tokens, bad));
    throw Error(
        fmt::format("model::Embedding::forward: '{}' token {} at row {} is outside the "
                    "vocabulary [0, {})",
                    name_, token(), bad, vocab_));
  }
  input_states_[slot].tokens = tokens;
  kernels::embedding_gather(store_->value(table_), tokens, y);
}

template <class T>
void Embedding<T>::backward(int slot, const Matrix<T>& dy) {
  const TokenView& tokens = input_states_[slot].tokens;
  if (dy.extent(0) != tokens.extent(0) || dy.extent(1) != std::size_t(width_))
    throw Error(
        fmt::format("model::Embedding::backward: '{}' slot {} saw {} tokens, got dy [{}, "
                    "{}]",
                    name_, slot, tokens.extent(0), dy.extent(0), dy.extent(1)));
  kernels::embedding_scatter_add(dy, tokens, store_->grad(table_));
}

template <class T>
void Embedding<T>::head_forward(int slot, const Matrix<T>& x, const Matrix<T>& logits) {
  if (x.extent(1) != std::size_t(width_) || logits.extent(0) != x.extent(0) ||
      logits.extent(1) != std::size_t(vocab_))
    throw Error(fmt::format(
        "model::Embedding::head_forward: '{}' maps [n, {}] to [n, {}], got x "
        "[{}, {}] and logits [{}, {}]",
        name_, width_, vocab_, x.extent(0), x.extent(1), logits.extent(0), logits.extent(1)));
  head_states_[slot].x = x;
  Kokkos::fence();
  kernels::gemm(Trans::no, Trans::yes, T(1), x, store_->value(table_), T(0), logits);
}

template <class T>
void Embedding<T>::head_backward(int slot, const Matrix<T>& dlogits, const Matrix<T>& dx,
                                 GradMode mode) {
  const Matrix<T>& x = head_states_[slot].x;
  const std::size_t n = x.extent(0);
  if (dlogits.extent(0) != n || dlogits.extent(1) != std::size_t(vocab_) ||
      (dx.extent(0) != 0 && (dx.extent(0) != n || dx.extent(1) != std::size_t(width_))))
    throw Error(fmt::format(
        "model::Embedding::head_backward: '{}' slot {} saw x [{}, {}], got "
        "dlogits [{}, {}] and dx [{}, {}]",
        name_, slot, n, width_, dlogits.extent(0), dlogits.extent(1), dx.extent(0), dx.extent(1)));
  Kokkos::fence();
  kernels::gemm(Trans::yes, Trans::no, T(1), dlogits, x, T(1), store_->grad(table_));
  if (dx.extent(0) != 0)
    kernels::gemm(Trans::no, Trans::no, T(1), dlogits, store_->value(table_),
                  mode == GradMode::accumulate ? T(1) : T(0), dx);
}

template class Embedding<float>;
template class Embedding<double>;

}  // namespace daa::model
