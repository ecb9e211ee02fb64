// Chrome trace files of the step timeline (see trace.hpp).
#include "daa/obs/trace.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "daa/core/json.hpp"
#include "daa/obs/report.hpp"

namespace daa::obs {

using core::json_string;

std::string chrome_trace_json(const std::vector<core::Span>& spans, int rank,
                              const std::string& host) {
  const int pid = rank + 1;
  std::string out = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  // Metadata events carry no ts: Perfetto rejects negative ones and needs none.
  out += fmt::format(
      "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{},\"tid\":0,\"args\":{{\"name\":{}}}}},\n"
      "{{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":{},\"tid\":0,"
      "\"args\":{{\"sort_index\":{}}}}}",
      pid, json_string(fmt::format("rank {} ({})", rank, host)), pid, rank);

  std::array<bool, core::kTrackCount> used{};
  for (const core::Span& span : spans) {
    const int index = static_cast<int>(span.track);
    if (index >= 0 && index < core::kTrackCount) used[std::size_t(index)] = true;
  }
  for (int index = 0; index < core::kTrackCount; ++index) {
    if (!used[std::size_t(index)]) continue;
    const char* name = core::track_name(static_cast<core::Track>(index));
    out += fmt::format(
        ",\n{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":{},\"tid\":{},"
        "\"args\":{{\"name\":{}}}}},\n"
        "{{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":{},\"tid\":{},"
        "\"args\":{{\"sort_index\":{}}}}}",
        pid, index + 1, json_string(name), pid, index + 1, index);
  }

  // Nanosecond resolution (3 decimals of a microsecond) keeps sub-microsecond spans visible.
  for (const core::Span& span : spans) {
    const int tid = static_cast<int>(span.track) + 1;
    out += fmt::format(
        ",\n{{\"name\":{},\"cat\":{},\"ph\":\"X\",\"ts\":{:.3f},\"dur\":{:.3f},\"pid\":{},"
        "\"tid\":{},\"args\":{{\"step\":{}}}}}",
        json_string(span.name ? span.name : ""), json_string(core::track_name(span.track)),
        span.begin_us, std::max(0.0, span.end_us - span.begin_us), pid, tid, span.step);
  }
  out += "\n]}\n";
  return out;
}

void write_chrome_trace(const std::string& path, const std::vector<core::Span>& spans, int rank,
                        const std::string& host) {
  write_text_file(path, chrome_trace_json(spans, rank, host));
}

}  // namespace daa::obs
