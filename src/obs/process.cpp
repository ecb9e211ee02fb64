// Process resource figures (see process.hpp).
#include "daa/obs/process.hpp"

#include <Kokkos_Macros.hpp>
#include <fstream>

#include <sys/resource.h>
#include <unistd.h>

#if defined(KOKKOS_ENABLE_CUDA)
#include <cuda_runtime.h>
#endif

namespace daa::obs {

std::int64_t resident_memory_bytes() {
  // statm counts pages: total program size, then resident.
  std::ifstream statm("/proc/self/statm");
  std::int64_t size_pages = 0, resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return -1;
  const long page_bytes = sysconf(_SC_PAGESIZE);
  if (page_bytes <= 0) return -1;
  return resident_pages * std::int64_t(page_bytes);
}

std::int64_t peak_resident_memory_bytes() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
  return std::int64_t(usage.ru_maxrss) * 1024;  // Linux reports kilobytes
}

std::optional<std::int64_t> device_memory_used_bytes() {
#if defined(KOKKOS_ENABLE_CUDA)
  std::size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
    cudaGetLastError();  // so that an unrelated later error check does not report this failure
    return std::nullopt;
  }
  return std::int64_t(total_bytes - free_bytes);
#else
  return std::nullopt;
#endif
}

std::string host_name() {
  char name[256] = {};
  // POSIX leaves truncation unterminated; the last byte stays 0.
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "unknown";
  return name;
}

}  // namespace daa::obs
