// A rank's timeline (core/timeline.hpp) as a Chrome Trace Event Format file, which Perfetto
// (ui.perfetto.dev) and chrome://tracing open: one process per rank, one thread per phase track.
#pragma once

#include <string>
#include <vector>

#include "daa/core/timeline.hpp"

namespace daa::obs {

// The JSON object form {"displayTimeUnit":"ms","traceEvents":[...]}: process and thread name and
// sort-index metadata, then one complete ("X") event per span with ts/dur in microseconds.
// pid is rank + 1 (Perfetto treats pid 0 as the kernel's idle task); the process is named
// "rank N (host)". tid is the track's index + 1. The files of several ranks merge by
// concatenating their traceEvents arrays.
std::string chrome_trace_json(const std::vector<core::Span>& spans, int rank,
                              const std::string& host);

// Writes chrome_trace_json(...) atomically. Throws daa::Error naming the path.
void write_chrome_trace(const std::string& path, const std::vector<core::Span>& spans, int rank,
                        const std::string& host);

}  // namespace daa::obs
