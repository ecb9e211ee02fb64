// Kokkos 3.4 (Debian's package) and Kokkos 4.x (the GPU images) from one source: starting Kokkos
// with the settings the mains pass, and the device-callable math functions, whose names moved
// between the two. Kernels and mains use these instead of the version-specific spellings.
#pragma once

#include <Kokkos_Core.hpp>

namespace daa::kernels {

// What a main asks of Kokkos at start. -1 leaves a setting to Kokkos (and to its environment
// variables and command-line flags).
struct KokkosOptions {
  int threads = -1;              // host threads of a threaded backend (OpenMP, Threads)
  int device_id = -1;            // the GPU this process uses on a CUDA build
  bool disable_warnings = true;  // Kokkos' start-up warnings (e.g. OMP_PROC_BIND unset)
};

// Kokkos 4.3 removed Kokkos::InitArguments; Kokkos::InitializationSettings replaced it in 3.7.
inline void initialize_kokkos(const KokkosOptions& options = {}) {
#if KOKKOS_VERSION >= 30700
  Kokkos::InitializationSettings settings;
  if (options.threads > 0) settings.set_num_threads(options.threads);
  if (options.device_id >= 0) settings.set_device_id(options.device_id);
  settings.set_disable_warnings(options.disable_warnings);
  Kokkos::initialize(settings);
#else
  Kokkos::InitArguments args;
  args.num_threads = options.threads;
  args.device_id = options.device_id;
  args.disable_warnings = options.disable_warnings;
  Kokkos::initialize(args);
#endif
}

// Math inside KOKKOS_LAMBDA / KOKKOS_INLINE_FUNCTION bodies: std:: functions are host-only under
// nvcc. Kokkos 3.4 has these in Kokkos::Experimental, 3.7 moved them to Kokkos:: and 4.x
// dropped the old names. On the host both forward to the std:: overload of the same argument
// type, so results are bit-identical to the std:: calls they replace.
namespace kmath {
#if KOKKOS_VERSION >= 30700
using Kokkos::erf;
using Kokkos::exp;
using Kokkos::fabs;
using Kokkos::fmax;
using Kokkos::fmin;
using Kokkos::log;
using Kokkos::pow;
using Kokkos::sqrt;
using Kokkos::tanh;
#else
using Kokkos::Experimental::erf;
using Kokkos::Experimental::exp;
using Kokkos::Experimental::fabs;
using Kokkos::Experimental::fmax;
using Kokkos::Experimental::fmin;
using Kokkos::Experimental::log;
using Kokkos::Experimental::pow;
using Kokkos::Experimental::sqrt;
using Kokkos::Experimental::tanh;
#endif
}  // namespace kmath

}  // namespace daa::kernels
