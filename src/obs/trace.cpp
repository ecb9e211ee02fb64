// Chrome trace files of the step timeline (see trace.hpp).
#include "daa/obs/trace.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <nlohmann/json.hpp>

#include "daa/obs/report.hpp"

namespace daa::obs {

namespace {

using Json = nlohmann::ordered_json;

// Microseconds rounded to the nanosecond: enough to keep sub-microsecond spans visible, and
// without the float noise of a difference (13.0004 - 12.5 is 0.5004000000000008). Beyond 2^53 ns
// (wall-clock timestamps) a double has no nanoseconds to round to, and the value stays as it is.
double to_nanosecond(double us) {
  return std::abs(us) < 9.0e12 ? std::round(us * 1000.0) / 1000.0 : us;
}

Json metadata(const char* name, int pid, int tid, const char* arg, const Json& value) {
  // Metadata events carry no ts: Perfetto rejects negative ones and needs none.
  return {{"name", name}, {"ph", "M"}, {"pid", pid}, {"tid", tid}, {"args", {{arg, value}}}};
}

}  // namespace

std::string chrome_trace_json(const std::vector<core::Span>& spans, int rank,
                              const std::string& host) {
  const int pid = rank + 1;
  std::vector<Json> events;
  events.push_back(
      metadata("process_name", pid, 0, "name", fmt::format("rank {} ({})", rank, host)));
  events.push_back(metadata("process_sort_index", pid, 0, "sort_index", rank));

  std::array<bool, core::kTrackCount> used{};
  for (const core::Span& span : spans) {
    const int index = static_cast<int>(span.track);
    if (index >= 0 && index < core::kTrackCount) used[std::size_t(index)] = true;
  }
  for (int index = 0; index < core::kTrackCount; ++index) {
    if (!used[std::size_t(index)]) continue;
    const char* name = core::track_name(static_cast<core::Track>(index));
    events.push_back(metadata("thread_name", pid, index + 1, "name", name));
    events.push_back(metadata("thread_sort_index", pid, index + 1, "sort_index", index));
  }

  for (const core::Span& span : spans)
    events.push_back({{"name", span.name ? span.name : ""},
                      {"cat", core::track_name(span.track)},
                      {"ph", "X"},
                      {"ts", to_nanosecond(span.begin_us)},
                      {"dur", to_nanosecond(std::max(0.0, span.end_us - span.begin_us))},
                      {"pid", pid},
                      {"tid", static_cast<int>(span.track) + 1},
                      {"args", {{"step", span.step}}}});

  // One event per line (each written by nlohmann) keeps a trace greppable and diffable; a single
  // dump() would put the whole file on one line.
  std::string out = R"({"displayTimeUnit":"ms","traceEvents":[)";
  for (std::size_t i = 0; i < events.size(); ++i)
    out += (i ? ",\n" : "\n") + events[i].dump(-1, ' ', false, Json::error_handler_t::replace);
  return out + "\n]}\n";
}

void write_chrome_trace(const std::string& path, const std::vector<core::Span>& spans, int rank,
                        const std::string& host) {
  write_text_file(path, chrome_trace_json(spans, rank, host));
}

}  // namespace daa::obs
