// Flat-buffer parameter registry (see params.hpp).
#include "daa/model/params.hpp"

#include "daa/core/error.hpp"
#include "daa/core/rng.hpp"

namespace daa::model {

template <class T>
int ParamStore<T>::declare(ParamInfo info) {
  if (values_.extent(0) != 0)
    throw Error("model::ParamStore::declare: '" + info.name + "' after allocate()");
  for (const ParamInfo& p : infos_)
    if (p.name == info.name)
      throw Error("model::ParamStore::declare: '" + info.name + "' declared twice");
  infos_.push_back(std::move(info));
  return static_cast<int>(infos_.size()) - 1;
}

template <class T>
void ParamStore<T>::allocate() {
  // Dense tensors first, then expert tensors, each in declaration order: layers declare in
  // whatever order suits them, and the two kinds still form two contiguous ranges.
  total_ = 0;
  for (const ParamKind kind : {ParamKind::dense, ParamKind::expert}) {
    for (ParamInfo& p : infos_)
      if (p.kind == kind) {
        p.offset = total_;
        total_ += p.size();
      }
    if (kind == ParamKind::dense) dense_total_ = total_;
  }
  values_ = kernels::Vector<T>("params", total_);
  grads_ = kernels::Vector<T>("grads", total_);
}

template <class T>
void ParamStore<T>::initialize(std::uint64_t seed,
                               const std::function<double(const ParamInfo&)>& std_dev) {
  auto host = Kokkos::create_mirror_view(values_);
  for (const ParamInfo& p : infos_) {
    const std::uint64_t stream = core::name_hash(p.name.c_str());
    const double scale = p.init == ParamInit::normal ? std_dev(p) : 0.0;
    for (std::size_t i = 0; i < p.size(); ++i) {
      double v = p.init == ParamInit::ones ? 1.0 : 0.0;
      if (p.init == ParamInit::normal)
        v = scale * core::counter_normal(seed, core::RngPurpose::init, stream, i);
      host(p.offset + i) = static_cast<T>(v);
    }
  }
  Kokkos::deep_copy(values_, host);
}

template <class T>
kernels::MatrixRef<T> ParamStore<T>::matrix(const kernels::Vector<T>& flat, int id) const {
  const ParamInfo& p = infos_.at(id);
  return kernels::MatrixRef<T>(flat.data() + p.offset, p.rows, p.cols);
}

template <class T>
kernels::VectorRef<T> ParamStore<T>::vector(const kernels::Vector<T>& flat, int id) const {
  const ParamInfo& p = infos_.at(id);
  return kernels::VectorRef<T>(flat.data() + p.offset, p.size());
}

template class ParamStore<float>;
template class ParamStore<double>;

}  // namespace daa::model
