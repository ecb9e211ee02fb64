// The counting replacement of the global operator new (and its operator delete), in a source of
// its own that the host compiler builds: under nvcc (the CUDA build's compiler for test sources
// that use Kokkos) a throwing operator new in the test's source is compiled for the device too.
#include "count_allocations.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<long> g_allocations{0};
}

long daa::test::allocation_count() {
  return g_allocations.load();
}

void* operator new(std::size_t bytes) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(bytes ? bytes : 1)) return p;
  throw std::bad_alloc();
}
// GCC flags free() on memory from operator new where these replacements are inlined into
// callers; here that pairing is exactly right.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
#pragma GCC diagnostic pop
