// View types and execution space used by every kernel. Views carry their memory space so the same
// code runs on the host (Serial/OpenMP) or, in the CUDA build, on the device (DESIGN.md §5).
#pragma once

#include <Kokkos_Core.hpp>

namespace daa::kernels {

using ExecSpace = Kokkos::DefaultExecutionSpace;
using MemSpace = ExecSpace::memory_space;
using Range = Kokkos::RangePolicy<ExecSpace>;
// Row kernels run one team per row: on the host backends a team is one thread whose reductions
// walk the row in column order (the bits of a plain loop); on a GPU the row's columns spread over
// the team's threads, reduced in an order fixed by the team size.
using RowPolicy = Kokkos::TeamPolicy<ExecSpace>;
using RowMember = RowPolicy::member_type;

template <class T>
using Vector = Kokkos::View<T*, Kokkos::LayoutRight, MemSpace>;
template <class T>
using Matrix = Kokkos::View<T**, Kokkos::LayoutRight, MemSpace>;
// Non-owning views into a larger buffer (parameters live in one flat buffer per precision).
template <class T>
using VectorRef = Kokkos::View<T*, Kokkos::LayoutRight, MemSpace, Kokkos::MemoryUnmanaged>;
template <class T>
using MatrixRef = Kokkos::View<T**, Kokkos::LayoutRight, MemSpace, Kokkos::MemoryUnmanaged>;

// Resizes a scratch view only when its shape changes; contents are not preserved.
template <class View>
void ensure_extent(View& view, std::size_t rows, std::size_t cols) {
  if (view.extent(0) != rows || view.extent(1) != cols)
    view = View(Kokkos::view_alloc(view.label(), Kokkos::WithoutInitializing), rows, cols);
}
template <class View>
void ensure_extent(View& view, std::size_t n) {
  if (view.extent(0) != n)
    view = View(Kokkos::view_alloc(view.label(), Kokkos::WithoutInitializing), n);
}

}  // namespace daa::kernels
