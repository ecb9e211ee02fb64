// The one explicit, measured step between a buffer in kernels::MemSpace (a gradient) and the host
// memory the robust all-reduce works on (DESIGN.md §5: Open MPI here is not CUDA-aware), and back.
// Where the memory space is host-accessible the buffer is used in place: no copy, no bytes.
#pragma once

#include <cstdint>
#include <span>

#include "daa/core/clock.hpp"
#include "daa/kernels/views.hpp"

namespace daa::robust {

// Stages one buffer per step: to_host() before the rounds, to_device() after them. Counts the
// bytes copied and the seconds spent (fences included) over all steps, and for the last step.
template <class T>
class HostStaging {
 public:
  using DeviceView = kernels::Vector<T>;
  static constexpr bool kInPlace =
      Kokkos::SpaceAccessibility<Kokkos::HostSpace, kernels::MemSpace>::accessible;

  // copy: stage through a separate host buffer even where the buffer could be used in place (for
  // tests of the copy path on a host build); the default copies exactly when it must.
  explicit HostStaging(bool copy = !kInPlace) : copy_(copy || !kInPlace) {}

  // Host memory with `device`'s values, valid until the next to_host(): the view's own memory
  // where it is host-accessible (and copy is off), else a host buffer (kept between steps) filled
  // by one deep_copy after the device's work is fenced.
  std::span<T> to_host(const DeviceView& device) {
    step_bytes_ = 0;
    step_seconds_ = 0;
    device_ = device;
    if (!copy_) {
      Kokkos::fence();  // kernels that wrote the buffer are done before MPI reads it
      return {device.data(), device.extent(0)};
    } else {
      const auto start = core::Clock::now();
      if (host_.extent(0) != device.extent(0))
        host_ = Host(Kokkos::view_alloc("robust_staging", Kokkos::WithoutInitializing),
                     device.extent(0));
      Kokkos::fence();
      Kokkos::deep_copy(host_, device);
      count(start, device.extent(0));
      return {host_.data(), host_.extent(0)};
    }
  }

  // Copies the host values (changed by the rounds) back into the buffer given to to_host().
  void to_device() {
    if (copy_) {
      const auto start = core::Clock::now();
      Kokkos::deep_copy(device_, host_);
      Kokkos::fence();
      count(start, device_.extent(0));
    }
  }

  std::int64_t step_bytes() const { return step_bytes_; }  // both directions, last step
  double step_seconds() const { return step_seconds_; }
  std::int64_t total_bytes() const { return total_bytes_; }  // both directions, every step
  double total_seconds() const { return total_seconds_; }

 private:
  using Host = Kokkos::View<T*, Kokkos::LayoutRight, Kokkos::HostSpace>;
  void count(core::Clock::time_point start, std::size_t values) {
    const double s = core::seconds_since(start);
    const auto bytes = std::int64_t(values * sizeof(T));
    step_bytes_ += bytes;
    total_bytes_ += bytes;
    step_seconds_ += s;
    total_seconds_ += s;
  }
  bool copy_;
  DeviceView device_;
  Host host_;
  std::int64_t step_bytes_ = 0, total_bytes_ = 0;
  double step_seconds_ = 0, total_seconds_ = 0;
};

}  // namespace daa::robust
