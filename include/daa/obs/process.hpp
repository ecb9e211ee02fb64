// What the process itself uses, for the metrics file and status: resident memory, device memory,
// and the host it runs on.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace daa::obs {

// Current resident set size in bytes (/proc/self/statm), or -1 where that cannot be read.
std::int64_t resident_memory_bytes();

// Peak resident set size of this process so far in bytes (getrusage ru_maxrss), or -1.
std::int64_t peak_resident_memory_bytes();

// Bytes in use on this process's current GPU (total - free, so other processes' use counts too),
// when built against a Kokkos with its CUDA backend; std::nullopt otherwise or on error.
std::optional<std::int64_t> device_memory_used_bytes();

// This machine's host name (gethostname; needs no MPI), "unknown" where it cannot be read.
std::string host_name();

}  // namespace daa::obs
