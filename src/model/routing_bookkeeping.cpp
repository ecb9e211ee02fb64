// The routing bookkeeping of the layers: expert_capacity, and the kernels of
// routing_bookkeeping_impl.hpp instantiated for kernels::ExecSpace.
#include "daa/model/routing_bookkeeping.hpp"

#include "daa/model/routing_bookkeeping_impl.hpp"

#include <algorithm>
#include <cmath>

namespace daa::model {

std::size_t expert_capacity(bool capacity_mode, double capacity_factor, std::size_t n,
                            std::size_t k, std::size_t experts) {
  return capacity_mode ? std::size_t(std::ceil(capacity_factor * double(n * k) / double(experts)))
                       : n * k;
}

template RoutingCounts RoutingBookkeeping::run<float>(const IntMatrix&, const Matrix<float>&,
                                                      const Matrix<float>&, std::size_t, IntMatrix&,
                                                      IntVector&, std::vector<int>*);
template RoutingCounts RoutingBookkeeping::run<double>(const IntMatrix&, const Matrix<double>&,
                                                       const Matrix<double>&, std::size_t,
                                                       IntMatrix&, IntVector&, std::vector<int>*);

}  // namespace daa::model
