// Parameter registry: every trainable tensor lives in one flat buffer (values) with a twin flat
// buffer for gradients, so aggregation, clipping and the optimizer work on contiguous memory.
// Each entry records whether it is dense (replicated over data-parallel ranks) or belongs to an
// expert (layer, expert id): expert parallelism shards exactly those entries.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "daa/kernels/views.hpp"

namespace daa::model {

enum class ParamKind { dense, expert };
// Initial values: weight matrices from a scaled normal, biases zero, norm gains one.
enum class ParamInit { normal, zeros, ones };

struct ParamInfo {
  std::string name;  // e.g. "moe1.expert3.w1"
  ParamKind kind = ParamKind::dense;
  int layer = -1;   // MoE layer index for expert (and router/norm) params, -1 otherwise
  int expert = -1;  // expert id for expert params
  std::size_t rows = 0;
  std::size_t cols = 0;  // 1 for vectors
  std::size_t offset = 0;
  bool decay = false;  // weight decay applies (matrices yes, biases and gains no)
  ParamInit init = ParamInit::zeros;
  // A copy of the parameter of the same name that another pipeline stage holds and trains (the
  // last stage's tied head: the first stage's embedding table). The model keeps it bit-identical
  // to the original, so checkpoints, parameter counts and gradient norms take only the original;
  // a restart fills the copy from the original's datasets, which share its name and path.
  bool tied_copy = false;
  std::size_t size() const { return rows * cols; }
};

template <class T>
class ParamStore {
 public:
  // Declares a tensor; returns its id. All declarations come before allocate(), which places
  // dense tensors first and expert tensors after them, each kind in declaration order; infos()
  // stays in declaration order.
  int declare(ParamInfo info);
  void allocate();

  const std::vector<ParamInfo>& infos() const { return infos_; }
  std::size_t size() const { return total_; }
  // Elements [0, dense_size()) are dense parameters; the rest are expert parameters.
  std::size_t dense_size() const { return dense_total_; }
  // Elements of tied copies (ParamInfo::tied_copy; dense), which another stage counts as its own.
  std::size_t tied_copy_size() const {
    std::size_t n = 0;
    for (const ParamInfo& p : infos_) n += p.tied_copy ? p.size() : 0;
    return n;
  }

  kernels::Vector<T> values() const { return values_; }
  kernels::Vector<T> grads() const { return grads_; }

  kernels::MatrixRef<T> value(int id) const { return matrix(values_, id); }
  kernels::MatrixRef<T> grad(int id) const { return matrix(grads_, id); }
  kernels::VectorRef<T> value_vec(int id) const { return vector(values_, id); }
  kernels::VectorRef<T> grad_vec(int id) const { return vector(grads_, id); }

  void zero_grads() const { Kokkos::deep_copy(grads_, T(0)); }

  // Deterministic initial values: a counter-based normal draw keyed by (seed, the tensor's name,
  // element) times std_dev(info) for ParamInit::normal, zeros and ones otherwise. Independent of
  // the rank layout, so every shard draws what the one-rank model draws.
  void initialize(std::uint64_t seed, const std::function<double(const ParamInfo&)>& std_dev);

 private:
  kernels::MatrixRef<T> matrix(const kernels::Vector<T>& flat, int id) const;
  kernels::VectorRef<T> vector(const kernels::Vector<T>& flat, int id) const;

  std::vector<ParamInfo> infos_;
  std::size_t total_ = 0;
  std::size_t dense_total_ = 0;
  kernels::Vector<T> values_;
  kernels::Vector<T> grads_;
};

}  // namespace daa::model
