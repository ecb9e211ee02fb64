// RMSNorm and LayerNorm (see norms.hpp): thin wrappers over the row kernels of nn_kernels.hpp that
// keep each slot's input and row statistics for backward.
#include "daa/model/norms.hpp"

#include <fmt/format.h>

#include "daa/core/error.hpp"
#include "daa/kernels/nn_kernels.hpp"

namespace daa::model {

using kernels::Matrix;

namespace {

constexpr double kEps = 1e-5;

template <class T>
void check_forward(const char* what, const std::string& name, int width, const Matrix<T>& x,
                   const Matrix<T>& y) {
  if (x.extent(1) != std::size_t(width) || y.extent(0) != x.extent(0) ||
      y.extent(1) != std::size_t(width))
    throw Error(fmt::format("model::{}::forward: '{}' has width {}, got x [{}, {}] and y [{}, {}]",
                            what, name, width, x.extent(0), x.extent(1), y.extent(0), y.extent(1)));
}

template <class T>
void check_backward(const char* what, const std::string& name, int slot, const Matrix<T>& x,
                    const Matrix<T>& dy, const Matrix<T>& dx) {
  if (dy.extent(0) != x.extent(0) || dy.extent(1) != x.extent(1) ||
      (dx.extent(0) != 0 && (dx.extent(0) != x.extent(0) || dx.extent(1) != x.extent(1))))
    throw Error(
        fmt::format("model::{}::backward: '{}' slot {} saw x [{}, {}], got dy [{}, {}] "
                    "and dx [{}, {}]",
                    what, name, slot, x.extent(0), x.extent(1), dy.extent(0), dy.extent(1),
                    dx.extent(0), dx.extent(1)));
}

}  // namespace

template <class T>
RMSNorm<T>::RMSNorm(ParamStore<T>& store, const std::string& name, int width,
                    const ParamPlace& place)
    : store_(&store), name_(name), width_(width) {
  if (width < 1)
    throw Error(fmt::format("model::RMSNorm: '{}' needs a positive width, got {}", name, width));
  gain_ = store.declare(vector_info(name + ".gain", std::size_t(width), ParamInit::ones, place));
}

template <class T>
void RMSNorm<T>::forward(int slot, const Matrix<T>& x, const Matrix<T>& y) {
  check_forward("RMSNorm", name_, width_, x, y);
  State& s = states_[slot];
  s.x = x;
  kernels::ensure_extent(s.inv_rms, x.extent(0));
  kernels::rmsnorm_forward(x, store_->value_vec(gain_), T(kEps), y, s.inv_rms);
}

template <class T>
void RMSNorm<T>::backward(int slot, const Matrix<T>& dy, const Matrix<T>& dx, GradMode mode) {
  State& s = states_[slot];
  check_backward("RMSNorm", name_, slot, s.x, dy, dx);
  // The kernel adds into dx; overwrite starts from zero, and a caller needing no dx still gets
  // the gain gradient through a scratch buffer.
  Matrix<T> target = dx;
  if (dx.extent(0) == 0) {
    kernels::ensure_extent(scratch_, s.x.extent(0), s.x.extent(1));
    target = scratch_;
    Kokkos::deep_copy(target, T(0));
  } else if (mode == GradMode::overwrite) {
    Kokkos::deep_copy(target, T(0));
  }
  kernels::rmsnorm_backward(s.x, store_->value_vec(gain_), s.inv_rms, dy, target,
                            store_->grad_vec(gain_));
}

template <class T>
LayerNorm<T>::LayerNorm(ParamStore<T>& store, const std::string& name, int width,
                        const ParamPlace& place)
    : store_(&store), name_(name), width_(width) {
  if (width < 1)
    throw Error(fmt::format("model::LayerNorm: '{}' needs a positive width, got {}", name, width));
  gain_ = store.declare(vector_info(name + ".gain", std::size_t(width), ParamInit::ones, place));
  bias_ = store.declare(vector_info(name + ".bias", std::size_t(width), ParamInit::zeros, place));
}

template <class T>
void LayerNorm<T>::forward(int slot, const Matrix<T>& x, const Matrix<T>& y) {
  check_forward("LayerNorm", name_, width_, x, y);
  State& s = states_[slot];
  s.x = x;
  kernels::ensure_extent(s.mean, x.extent(0));
  kernels::ensure_extent(s.inv_std, x.extent(0));
  kernels::layernorm_forward(x, store_->value_vec(gain_), store_->value_vec(bias_), T(kEps), y,
                             s.mean, s.inv_std);
}

template <class T>
void LayerNorm<T>::backward(int slot, const Matrix<T>& dy, const Matrix<T>& dx, GradMode mode) {
  State& s = states_[slot];
  check_backward("LayerNorm", name_, slot, s.x, dy, dx);
  if (dx.extent(0) != 0 && mode == GradMode::overwrite) Kokkos::deep_copy(dx, T(0));
  kernels::layernorm_backward(s.x, store_->value_vec(gain_), s.mean, s.inv_std, dy, dx,
                              store_->grad_vec(gain_), store_->grad_vec(bias_));
}

template class RMSNorm<float>;
template class RMSNorm<double>;
template class LayerNorm<float>;
template class LayerNorm<double>;

}  // namespace daa::model
