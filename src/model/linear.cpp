// Linear layer (see linear.hpp): the products go through the linalg adapter, the bias through the
// Kokkos kernels of nn_kernels.hpp.
#include "daa/model/linear.hpp"

#include <fmt/format.h>

#include "daa/core/error.hpp"
#include "daa/kernels/linalg.hpp"
#include "daa/kernels/nn_kernels.hpp"

namespace daa::model {

using kernels::Matrix;
using kernels::Trans;

template <class T>
Linear<T>::Linear(ParamStore<T>& store, const std::string& name, int in, int out, bool bias,
                  const ParamPlace& place)
    : store_(&store), name_(name), in_(in), out_(out) {
  if (in < 1 || out < 1)
    throw Error(
        fmt::format("model::Linear: '{}' needs positive widths, got {} -> {}", name, in, out));
  w_ = store.declare(weight_info(name + ".w", std::size_t(in), std::size_t(out), place));
  if (bias) b_ = store.declare(vector_info(name + ".b", std::size_t(out), ParamInit::zeros, place));
}

template <class T>
void Linear<T>::forward(int slot, const Matrix<T>& x, const Matrix<T>& y) {
  if (x.extent(1) != std::size_t(in_) || y.extent(0) != x.extent(0) ||
      y.extent(1) != std::size_t(out_))
    throw Error(
        fmt::format("model::Linear::forward: '{}' maps [n, {}] to [n, {}], got x [{}, {}] "
                    "and y [{}, {}]",
                    name_, in_, out_, x.extent(0), x.extent(1), y.extent(0), y.extent(1)));
  states_[slot].x = x;
  // Host BLAS reads x, which a kernel may still be writing on a device backend.
  Kokkos::fence();
  kernels::gemm(Trans::no, Trans::no, T(1), x, store_->value(w_), T(0), y);
  if (b_ >= 0) kernels::add_bias(y, store_->value_vec(b_));
}

template <class T>
void Linear<T>::backward(int slot, const Matrix<T>& dy, const Matrix<T>& dx, GradMode mode) {
  const Matrix<T>& x = states_[slot].x;
  const std::size_t n = x.extent(0);
  if (dy.extent(0) != n || dy.extent(1) != std::size_t(out_) ||
      (dx.extent(0) != 0 && (dx.extent(0) != n || dx.extent(1) != std::size_t(in_))))
    throw Error(
        fmt::format("model::Linear::backward: '{}' slot {} saw x [{}, {}], got dy [{}, {}] "
                    "and dx [{}, {}]",
                    name_, slot, n, in_, dy.extent(0), dy.extent(1), dx.extent(0), dx.extent(1)));
  Kokkos::fence();
  kernels::gemm(Trans::yes, Trans::no, T(1), x, dy, T(1), store_->grad(w_));
  if (dx.extent(0) != 0)
    kernels::gemm(Trans::no, Trans::yes, T(1), dy, store_->value(w_),
                  mode == GradMode::accumulate ? T(1) : T(0), dx);
  if (b_ >= 0) kernels::accumulate_bias_grad(dy, store_->grad_vec(b_));
}

template class Linear<float>;
template class Linear<double>;

}  // namespace daa::model
