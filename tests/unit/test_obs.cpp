// The observability building blocks: the step timeline, Chrome trace files, Prometheus text,
// process figures, status.json and the run summary JSON, checked against exact expected output
// (the JSON documents value by value after parsing, and for their layout) and a strict JSON
// syntax check (nlohmann's parser: no NaN, no trailing commas, no raw control characters).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <Kokkos_Macros.hpp>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "count_allocations.hpp"
#include "daa/core/error.hpp"
#include "daa/core/timeline.hpp"
#include "daa/obs/metrics.hpp"
#include "daa/obs/process.hpp"
#include "daa/obs/report.hpp"
#include "daa/obs/status.hpp"
#include "daa/obs/trace.hpp"

namespace {

using daa::core::ScopedSpan;
using daa::core::Span;
using daa::core::Timeline;
using daa::core::Track;
using ::testing::HasSubstr;
// Parsed with keys in document order, so that comparing two documents also compares key order.
using Json = nlohmann::ordered_json;

// Every top-level key of `doc` starts a line of `text` (the "one key per line" promise).
void expect_one_key_per_line(const std::string& text, const Json& doc) {
  for (const auto& [key, value] : doc.items())
    EXPECT_THAT(text, HasSubstr("\n  \"" + key + "\": ")) << key;
}

// Leaves the process timeline as every test expects to find it: off and empty.
struct TimelineReset {
  ~TimelineReset() {
    Timeline::process().stop_recording();
    Timeline::process().clear();
  }
};

// First in the file so that the timeline has never recorded: not even a reservation exists.
TEST(Timeline, RecordsAndAllocatesNothingWhenOff) {
  TimelineReset reset;
  Timeline& timeline = Timeline::process();
  ASSERT_FALSE(timeline.recording());
  const long before = daa::test::allocation_count();
  for (int i = 0; i < 1000; ++i) {
    timeline.set_step(i);
    ScopedSpan span(Track::compute, "forward");
    const auto now = std::chrono::steady_clock::now();
    timeline.add(Track::data, "batch", now, now);
  }
  EXPECT_EQ(daa::test::allocation_count() - before, 0);
  EXPECT_TRUE(timeline.spans().empty());
}

TEST(Timeline, RecordsSpansWithTrackAndStep) {
  TimelineReset reset;
  Timeline& timeline = Timeline::process();
  timeline.start_recording(16);
  EXPECT_TRUE(timeline.recording());
  timeline.set_step(7);
  {
    ScopedSpan step(Track::step, "step");
    ScopedSpan compute(Track::compute, "forward");
    usleep(2000);
  }
  timeline.set_step(8);
  const auto t0 = std::chrono::steady_clock::now();
  timeline.add(Track::all_to_all, "dispatch", t0, t0 + std::chrono::microseconds(250));
  const long before = daa::test::allocation_count();
  { ScopedSpan within_reservation(Track::aggregation, "median"); }
  EXPECT_EQ(daa::test::allocation_count() - before, 0)
      << "recording within the reservation allocates";
  timeline.stop_recording();
  { ScopedSpan after_stop(Track::eval, "eval"); }

  const std::vector<Span>& spans = timeline.spans();
  ASSERT_EQ(spans.size(), 4u);
  // Destruction order: the inner span ends first.
  EXPECT_EQ(spans[0].track, Track::compute);
  EXPECT_STREQ(spans[0].name, "forward");
  EXPECT_EQ(spans[0].step, 7);
  EXPECT_EQ(spans[1].track, Track::step);
  EXPECT_EQ(spans[1].step, 7);
  EXPECT_LE(spans[1].begin_us, spans[0].begin_us);
  EXPECT_GE(spans[1].end_us, spans[0].end_us);
  EXPECT_GE(spans[0].end_us - spans[0].begin_us, 2000.0);
  EXPECT_GE(spans[0].begin_us, 0.0);
  EXPECT_EQ(spans[2].track, Track::all_to_all);
  EXPECT_EQ(spans[2].step, 8);
  EXPECT_NEAR(spans[2].end_us - spans[2].begin_us, 250.0, 1e-6);
  EXPECT_EQ(spans[3].track, Track::aggregation);
}

TEST(Timeline, OriginIsKeptAcrossWindows) {
  TimelineReset reset;
  Timeline& timeline = Timeline::process();
  timeline.start_recording();
  { ScopedSpan first(Track::data, "batch"); }
  timeline.stop_recording();
  const double first_begin = timeline.spans().at(0).begin_us;
  timeline.clear();
  usleep(1000);
  timeline.start_recording();
  { ScopedSpan second(Track::data, "batch"); }
  ASSERT_EQ(timeline.spans().size(), 1u);
  EXPECT_GE(timeline.spans()[0].begin_us - first_begin, 1000.0);
}

TEST(ChromeTrace, ExactDocument) {
  const std::vector<Span> spans = {{Track::compute, "forward", 3, 10.0, 12.5},
                                   {Track::all_to_all, "dispatch", 3, 12.5, 13.0004},
                                   {Track::compute, "backward", 4, 1500.25, 3000.125}};
  const std::string json = daa::obs::chrome_trace_json(spans, 2, "node\"7");
  EXPECT_TRUE(Json::accept(json));
  // Values and key order; ts and dur are rounded to the nanosecond (0.5004 us -> 0.5).
  EXPECT_EQ(Json::parse(json), Json::parse(R"json({"displayTimeUnit": "ms", "traceEvents": [
    {"name": "process_name", "ph": "M", "pid": 3, "tid": 0, "args": {"name": "rank 2 (node\"7)"}},
    {"name": "process_sort_index", "ph": "M", "pid": 3, "tid": 0, "args": {"sort_index": 2}},
    {"name": "thread_name", "ph": "M", "pid": 3, "tid": 3, "args": {"name": "compute"}},
    {"name": "thread_sort_index", "ph": "M", "pid": 3, "tid": 3, "args": {"sort_index": 2}},
    {"name": "thread_name", "ph": "M", "pid": 3, "tid": 4, "args": {"name": "all-to-all"}},
    {"name": "thread_sort_index", "ph": "M", "pid": 3, "tid": 4, "args": {"sort_index": 3}},
    {"name": "forward", "cat": "compute", "ph": "X", "ts": 10.0, "dur": 2.5, "pid": 3, "tid": 3,
     "args": {"step": 3}},
    {"name": "dispatch", "cat": "all-to-all", "ph": "X", "ts": 12.5, "dur": 0.5, "pid": 3,
     "tid": 4, "args": {"step": 3}},
    {"name": "backward", "cat": "compute", "ph": "X", "ts": 1500.25, "dur": 1499.875, "pid": 3,
     "tid": 3, "args": {"step": 4}}
  ]
})json"));
  // Layout: one event per line between the opening and the closing line.
  EXPECT_TRUE(json.starts_with("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n{\"name\":"))
      << json;
  EXPECT_TRUE(json.ends_with("}\n]}\n")) << json;
  EXPECT_EQ(std::count(json.begin(), json.end(), '\n'), 1 + 9 + 1) << json;  // 9 events
  EXPECT_THAT(json, HasSubstr(R"("ts":12.5,"dur":0.5,)"));
}

TEST(ChromeTrace, WallClockTimestampsRoundTrip) {
  // Wall-clock microseconds (~1.7e15) hold no nanoseconds; the written number must read back as
  // the very same double, or the ranks' files would not line up.
  const double begin = 1700000000123456.25, end = begin + 3.5;
  const std::string json =
      daa::obs::chrome_trace_json({{Track::step, "step", 1, begin, end}}, 0, "h");
  const Json doc = Json::parse(json);
  const Json& event = doc["traceEvents"].back();
  EXPECT_EQ(event["ts"].get<double>(), begin);
  EXPECT_EQ(event["dur"].get<double>(), 3.5);
}

TEST(ChromeTrace, HostThatIsNotUtf8StillGivesValidJson) {
  const std::string json = daa::obs::chrome_trace_json({}, 0, "bad\xff");
  EXPECT_TRUE(Json::accept(json));
  EXPECT_EQ(Json::parse(json)["traceEvents"][0]["args"]["name"], "rank 0 (bad\xEF\xBF\xBD)");
}

TEST(ChromeTrace, EmptyTimelineIsStillAValidTrace) {
  const std::string json = daa::obs::chrome_trace_json({}, 0, "h");
  EXPECT_TRUE(Json::accept(json));
  EXPECT_THAT(json, HasSubstr("\"rank 0 (h)\""));
  EXPECT_THAT(json, ::testing::Not(HasSubstr("thread_name")));
}

TEST(ChromeTrace, RecordedTimelineWritesAParsableFile) {
  TimelineReset reset;
  Timeline& timeline = Timeline::process();
  timeline.start_recording();
  for (int step = 1; step <= 3; ++step) {
    timeline.set_step(step);
    ScopedSpan whole(Track::step, "step");
    { ScopedSpan data(Track::data, "batch"); }
    { ScopedSpan compute(Track::compute, "forward"); }
    { ScopedSpan aggregation(Track::aggregation, "robust all-reduce"); }
  }
  timeline.stop_recording();
  const auto dir =
      std::filesystem::temp_directory_path() / ("daa-test-obs-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "rank0.json").string();
  daa::obs::write_chrome_trace(path, timeline.spans(), 0, daa::obs::host_name());
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_TRUE(Json::accept(text.str()));
  EXPECT_EQ(text.str(), daa::obs::chrome_trace_json(timeline.spans(), 0, daa::obs::host_name()));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  // DAA_KEEP_TRACE keeps a sample for checking by hand (python3 -m json.tool, Perfetto).
  if (!std::getenv("DAA_KEEP_TRACE")) std::filesystem::remove_all(dir);

  const std::string missing = "/nonexistent-daa-dir/trace/rank0.json";
  try {
    daa::obs::write_chrome_trace(missing, timeline.spans(), 0, "h");
    FAIL() << "expected daa::Error";
  } catch (const daa::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(missing));
  }
}

TEST(Prometheus, ExactTextForASmallCase) {
  daa::obs::PrometheusText text;
  text.gauge("daa_step", "Training steps done.", 42);
  text.gauge("daa_resident_memory_bytes", "Resident memory of the rank.", 1.5e9,
             {{"rank", "0"}, {"host", "a\"b\\c\nd"}});
  text.gauge("daa_resident_memory_bytes", "Resident memory of the rank.", 2048,
             {{"rank", "1"}, {"host", "n2"}});
  text.counter("daa_dropped_tokens_total", "Tokens dropped by expert capacity,\nall layers.", 7);
  daa::obs::Histogram histogram({0.5, 1});
  for (double v : {0.25, 0.5, 0.75, 3.0}) histogram.observe(v);
  text.histogram("daa_step_seconds", "Wall time per step.", histogram, {{"rank", "0"}});
  text.gauge("daa_loss", "Training loss.", 0.1);
  EXPECT_EQ(text.text(),
            "# HELP daa_step Training steps done.\n"
            "# TYPE daa_step gauge\n"
            "daa_step 42\n"
            "# HELP daa_resident_memory_bytes Resident memory of the rank.\n"
            "# TYPE daa_resident_memory_bytes gauge\n"
            "daa_resident_memory_bytes{rank=\"0\",host=\"a\\\"b\\\\c\\nd\"} 1500000000\n"
            "daa_resident_memory_bytes{rank=\"1\",host=\"n2\"} 2048\n"
            "# HELP daa_dropped_tokens_total Tokens dropped by expert capacity,\\nall layers.\n"
            "# TYPE daa_dropped_tokens_total counter\n"
            "daa_dropped_tokens_total 7\n"
            "# HELP daa_step_seconds Wall time per step.\n"
            "# TYPE daa_step_seconds histogram\n"
            "daa_step_seconds_bucket{rank=\"0\",le=\"0.5\"} 2\n"
            "daa_step_seconds_bucket{rank=\"0\",le=\"1\"} 3\n"
            "daa_step_seconds_bucket{rank=\"0\",le=\"+Inf\"} 4\n"
            "daa_step_seconds_sum{rank=\"0\"} 4.5\n"
            "daa_step_seconds_count{rank=\"0\"} 4\n"
            "# HELP daa_loss Training loss.\n"
            "# TYPE daa_loss gauge\n"
            "daa_loss 0.1\n");
}

TEST(Prometheus, ValuesRoundTrip) {
  using daa::obs::prometheus_value;
  EXPECT_EQ(prometheus_value(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(prometheus_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(prometheus_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(prometheus_value(123456789), "123456789");
  EXPECT_EQ(prometheus_value(0), "0");
  EXPECT_EQ(prometheus_value(-2.5), "-2.5");
  for (double v : {0.1, 1.0 / 3, 6.02214076e23, 1e-300, 2.0 / 7 * 1e9})
    EXPECT_EQ(std::strtod(prometheus_value(v).c_str(), nullptr), v) << prometheus_value(v);
}

TEST(Prometheus, HistogramWithoutLabelsAndEmpty) {
  daa::obs::PrometheusText text;
  text.histogram("h", "Empty.", daa::obs::Histogram({1}));
  EXPECT_EQ(text.text(),
            "# HELP h Empty.\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\n"
            "h_sum 0\nh_count 0\n");
}

TEST(Prometheus, HistogramBucketsAreCumulative) {
  daa::obs::Histogram h = daa::obs::Histogram::step_seconds();
  ASSERT_EQ(h.upper_bounds().size(), 15u);
  EXPECT_EQ(h.upper_bounds().front(), 0.001);
  EXPECT_EQ(h.upper_bounds().back(), 60.0);
  h.observe(0.0005);  // below the first bound
  h.observe(0.003);   // le 0.005
  h.observe(0.005);   // a value on a bound counts in that bucket
  h.observe(100);     // only +Inf
  h.observe(std::numeric_limits<double>::quiet_NaN());
  const auto& c = h.cumulative_counts();
  EXPECT_EQ(c[0], 1u);
  EXPECT_EQ(c[1], 1u);
  EXPECT_EQ(c[2], 3u);
  EXPECT_EQ(c.back(), 3u);
  EXPECT_EQ(h.count(), 5u);
  for (std::size_t i = 1; i < c.size(); ++i) EXPECT_LE(c[i - 1], c[i]);
}

TEST(Prometheus, BadHistogramBoundsRejected) {
  EXPECT_THROW(daa::obs::Histogram({1, 0.5}), daa::Error);
  EXPECT_THROW(daa::obs::Histogram({1, 1}), daa::Error);
  EXPECT_THROW(daa::obs::Histogram({1, std::numeric_limits<double>::infinity()}), daa::Error);
  EXPECT_THROW(daa::obs::Histogram({std::numeric_limits<double>::quiet_NaN()}), daa::Error);
  EXPECT_NO_THROW(daa::obs::Histogram({}));
}

// Runs `write` and expects a daa::Error whose message names `culprit`.
template <typename Write>
void expect_rejected(Write write, const std::string& culprit) {
  try {
    write();
    ADD_FAILURE() << "expected daa::Error naming '" << culprit << "'";
  } catch (const daa::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'" + culprit + "'"));
  }
}

TEST(Prometheus, InvalidNamesRejected) {
  daa::obs::PrometheusText text;
  for (const std::string name : {"", "1abc", "a-b", "a b", "é"})
    expect_rejected([&] { text.gauge(name, "x", 1); }, name);
  for (const std::string label : {"", "0x", "a:b", "__reserved", "a-b"})
    expect_rejected([&] { text.gauge("ok", "x", 1, {{label, "v"}}); }, label);
  expect_rejected([&] { text.gauge("ok", "x", 1, {{"a", "1"}, {"a", "2"}}); }, "a");
  expect_rejected([&] { text.counter("daa_tokens", "x", 1); }, "daa_tokens");
  expect_rejected(
      [&] {
        text.histogram("daa_h", "x", daa::obs::Histogram({1}), {{"le", "1"}});
      },
      "le");
  EXPECT_EQ(text.text(), "") << "a rejected sample must leave no half-written family";
  EXPECT_NO_THROW(text.gauge("ns:sub_name_2", "x", 1, {{"_a1", ""}}));
}

TEST(Prometheus, FamilyReopenedAfterAnotherRejected) {
  daa::obs::PrometheusText text;
  text.gauge("a", "A.", 1, {{"rank", "0"}});
  text.gauge("b", "B.", 2);
  expect_rejected([&] { text.gauge("a", "A.", 3, {{"rank", "1"}}); }, "a");
  expect_rejected([&] { text.counter("b", "B.", 3); }, "b");  // not _total: rejected anyway
  daa::obs::PrometheusText typed;
  typed.gauge("x_total", "X.", 1);
  expect_rejected([&] { typed.counter("x_total", "X.", 2); }, "x_total");
}

TEST(Process, ResidentMemoryGrowsWithTouchedPages) {
  const std::int64_t before = daa::obs::resident_memory_bytes();
  ASSERT_GT(before, 0);
  constexpr std::size_t kBytes = 64 << 20;
  std::vector<unsigned char> buffer(kBytes);
  for (std::size_t i = 0; i < kBytes; i += 512) buffer[i] = static_cast<unsigned char>(i >> 9);
  const std::int64_t after = daa::obs::resident_memory_bytes();
  EXPECT_GE(after - before, std::int64_t(kBytes) * 3 / 4) << before << " -> " << after;
  EXPECT_EQ(buffer[kBytes - 512], static_cast<unsigned char>((kBytes - 512) >> 9));
}

#if defined(KOKKOS_ENABLE_CUDA)
// Only a CUDA build has device memory to report (a host build reports none by construction).
TEST(Process, DeviceMemoryIsReportedOnCuda) {
  const auto used = daa::obs::device_memory_used_bytes();
  ASSERT_TRUE(used.has_value());
  EXPECT_GT(*used, 0);
}
#endif

TEST(Status, ExactDocument) {
  daa::obs::RunStatus s;
  s.run = "tiny";
  s.state = "training";
  s.health = "degraded";
  s.step = 120;
  s.total_steps = 400;
  s.epoch = 2;
  s.loss = 0.5;
  s.train_accuracy = 0.875;
  s.samples_per_s = 1234.5;
  s.seconds_per_step = 0.25;
  s.ranks = 8;
  s.pipeline_stages = 2;
  s.data_parallel = 4;
  s.expert_parallel = 2;
  s.micro_batches = 4;
  s.suspects = {{3, "n1", 0.125}, {6, "n\"2", 0.25}};
  s.stragglers = {{5, "n3", 410.5}};
  s.median_compute_ms = 100;
  s.quarantined = {3, 6};
  s.last_checkpoint_step = 100;
  s.last_checkpoint = "runs/tiny/checkpoints/step-100.h5";
  s.updated_unix_ms = 1700000000123;
  s.message = "";
  const std::string json = daa::obs::status_json(s);
  EXPECT_TRUE(Json::accept(json));
  const Json doc = Json::parse(json);
  EXPECT_EQ(doc, Json::parse(R"json({
    "run": "tiny",
    "state": "training",
    "health": "degraded",
    "step": 120,
    "total_steps": 400,
    "epoch": 2,
    "loss": 0.5,
    "train_accuracy": 0.875,
    "samples_per_s": 1234.5,
    "seconds_per_step": 0.25,
    "layout": {"ranks": 8, "pipeline_stages": 2, "data_parallel": 4, "expert_parallel": 2,
               "micro_batches": 4},
    "suspects": [
      {"rank": 3, "host": "n1", "reputation": 0.125},
      {"rank": 6, "host": "n\"2", "reputation": 0.25}
    ],
    "stragglers": [
      {"rank": 5, "host": "n3", "compute_ms": 410.5}
    ],
    "median_compute_ms": 100,
    "quarantined": [3, 6],
    "last_checkpoint_step": 100,
    "last_checkpoint": "runs/tiny/checkpoints/step-100.h5",
    "updated_unix_ms": 1700000000123,
    "message": ""
  })json"));
  // Integers stay integers (a step of 1e2 would read badly and compare oddly in jq).
  EXPECT_TRUE(doc["step"].is_number_integer());
  EXPECT_TRUE(doc["updated_unix_ms"].is_number_integer());
  EXPECT_TRUE(json.starts_with("{\n  \"run\": \"tiny\",\n"));
  EXPECT_TRUE(json.ends_with("\n}\n"));
  expect_one_key_per_line(json, doc);
}

TEST(Status, EmptyListsAndNonFiniteNumbers) {
  daa::obs::RunStatus s;
  s.run = "r";
  s.state = "failed";
  s.health = "ok";
  s.loss = std::numeric_limits<double>::quiet_NaN();
  s.samples_per_s = std::numeric_limits<double>::infinity();
  s.message = "diverged: loss is NaN at step 3\n";
  const std::string json = daa::obs::status_json(s);
  EXPECT_TRUE(Json::accept(json)) << json;
  const Json doc = Json::parse(json);
  EXPECT_TRUE(doc["loss"].is_null());
  EXPECT_TRUE(doc["samples_per_s"].is_null());
  EXPECT_EQ(doc["train_accuracy"], 0.0);
  EXPECT_EQ(doc["suspects"], Json::array());
  EXPECT_EQ(doc["stragglers"], Json::array());
  EXPECT_EQ(doc["quarantined"], Json::array());
  EXPECT_EQ(doc["last_checkpoint_step"], -1);
  EXPECT_EQ(doc["last_checkpoint"], "");
  EXPECT_EQ(doc["message"], "diverged: loss is NaN at step 3\n");
  expect_one_key_per_line(json, doc);
}

TEST(Status, TextThatIsNotUtf8StillGivesValidJson) {
  daa::obs::RunStatus s;
  s.stragglers = {{1, "n\xc3", 2.0}};  // a truncated two-byte sequence
  s.message = "read \xff\xfe";
  const std::string json = daa::obs::status_json(s);
  EXPECT_TRUE(Json::accept(json)) << json;
  const Json doc = Json::parse(json);
  EXPECT_EQ(doc["stragglers"][0]["host"], "n\xEF\xBF\xBD");
  EXPECT_EQ(doc["message"], "read \xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(Summary, ExactDocument) {
  daa::obs::RunSummary s;
  s.name = "tiny";
  s.ranks = 4;
  s.steps = 64;
  s.epochs = 2;
  s.global_batch = 64;
  s.final_loss = 0.1 + 0.2;  // not a short decimal: must still read back as the same double
  s.train_accuracy = 0.75;
  s.test_loss = std::numeric_limits<double>::quiet_NaN();
  s.test_accuracy = 0.8125;
  s.test_accuracy_per_epoch = {0.5, 0.8125};
  s.samples_per_s = 2048.5;
  s.steady_samples_per_s = 2100;
  s.train_seconds = 1.25;
  s.wall_seconds = 2.5;
  s.phases = {.data = 0.125, .compute = 0.5, .comm = 0.25, .dispatch = 0.0625, .eval = 0.375};
  s.expert_gflops = 12.5;
  s.parameters = 123456;
  s.parameter_checksum = "0123456789abcdef";
  s.robust = "median (sharded, f = 1)";
  s.byzantine = "ranks 3 simulate bit-flip";
  s.aggregation_seconds = 0.2;
  s.consensus_seconds = 1e-5;
  s.ledger = {{.rank = 0, .host = "n0", .reputation = 1, .rounds = 10, .accepted = 10},
              {.rank = 3,
               .host = "n\"3",
               .reputation = 0.25,
               .rounds = 10,
               .accepted = 4,
               .rejected = 6,
               .accusations = 2,
               .reward = -1.5,
               .quarantined = true,
               .suspect = true}};
  s.staging_seconds = 0.5;
  s.staging_bytes = 4096;
  s.start_step = 32;
  s.checkpoints = 1;
  s.checkpoint_seconds = 0.03125;
  s.last_checkpoint = "runs/tiny/checkpoints/step-00000064.h5";
  const std::string json = daa::obs::summary_json(s);
  EXPECT_TRUE(Json::accept(json)) << json;
  const Json doc = Json::parse(json);
  EXPECT_EQ(doc, Json::parse(R"json({
    "name": "tiny", "ranks": 4, "steps": 64, "epochs": 2, "global_batch": 64,
    "final_loss": 0.30000000000000004, "train_accuracy": 0.75, "test_loss": null,
    "test_accuracy": 0.8125, "test_accuracy_per_epoch": [0.5, 0.8125], "samples_per_s": 2048.5,
    "steady_samples_per_s": 2100, "train_seconds": 1.25, "wall_seconds": 2.5,
    "phases": {"data_s": 0.125, "compute_s": 0.5, "comm_s": 0.25, "dispatch_s": 0.0625,
               "eval_s": 0.375},
    "expert_gflops": 12.5, "parameters": 123456, "parameter_checksum": "0123456789abcdef",
    "robust": "median (sharded, f = 1)", "byzantine": "ranks 3 simulate bit-flip",
    "aggregation_s": 0.2, "consensus_s": 1e-05, "staging_s": 0.5, "staging_bytes": 4096,
    "ledger": [
      {"rank": 0, "host": "n0", "reputation": 1, "rounds": 10, "accepted": 10, "rejected": 0,
       "accusations": 0, "reward": 0, "quarantined": false, "suspect": false},
      {"rank": 3, "host": "n\"3", "reputation": 0.25, "rounds": 10, "accepted": 4, "rejected": 6,
       "accusations": 2, "reward": -1.5, "quarantined": true, "suspect": true}
    ],
    "start_step": 32, "checkpoints": 1, "checkpoint_s": 0.03125,
    "last_checkpoint": "runs/tiny/checkpoints/step-00000064.h5", "stopped_by_signal": false
  })json"));
  EXPECT_EQ(doc["final_loss"].get<double>(), 0.1 + 0.2);
  // Scripts read single keys with grep (scripts/bench-ep): `"key": value` on a line of its own.
  expect_one_key_per_line(json, doc);
  EXPECT_THAT(json, HasSubstr("\n    \"comm_s\": 0.25,\n"));
  EXPECT_TRUE(json.ends_with("\n}\n"));
}

// A language model's summary adds its figures (read by scripts/bench-peer-lm) in fixed places;
// a NaN bits/byte (no final evaluation) comes out as null.
TEST(Summary, LanguageModelKeys) {
  daa::obs::RunSummary s;
  s.name = "lm";
  s.model = "language-model";
  s.unit = "sequences";
  s.samples_per_s = 24.5;
  s.steady_samples_per_s = 25;
  s.tokens_per_s = 3136;
  s.bits_per_byte = 2.5;
  s.domain_bits_per_byte = {{"prose", 2.25}, {"code", 2.75}, {"math", 2.5}};
  s.expert_gflops = 48.5;
  s.attention_gflops = 16.25;
  const std::string json = daa::obs::summary_json(s);
  EXPECT_TRUE(Json::accept(json)) << json;
  const Json doc = Json::parse(json);
  std::vector<std::string> keys;
  for (const auto& [key, value] : doc.items()) keys.push_back(key);
  const std::vector<std::string> head{"name",
                                      "ranks",
                                      "steps",
                                      "epochs",
                                      "global_batch",
                                      "final_loss",
                                      "train_accuracy",
                                      "test_loss",
                                      "test_accuracy",
                                      "test_accuracy_per_epoch",
                                      "samples_per_s",
                                      "steady_samples_per_s",
                                      "model",
                                      "tokens_per_s",
                                      "val_bits_per_byte",
                                      "val_bits_per_byte_per_domain",
                                      "train_seconds",
                                      "wall_seconds",
                                      "phases",
                                      "expert_gflops",
                                      "attention_gflops",
                                      "parameters"};
  ASSERT_GE(keys.size(), head.size());
  EXPECT_EQ(std::vector<std::string>(keys.begin(), keys.begin() + std::ptrdiff_t(head.size())),
            head);
  EXPECT_EQ(doc["model"], "language-model");
  EXPECT_EQ(doc["tokens_per_s"].get<double>(), 3136);
  EXPECT_EQ(doc["val_bits_per_byte"].get<double>(), 2.5);
  EXPECT_EQ(doc["val_bits_per_byte_per_domain"],
            Json::parse(R"({"prose": 2.25, "code": 2.75, "math": 2.5})"));
  EXPECT_EQ(doc["attention_gflops"].get<double>(), 16.25);
  expect_one_key_per_line(json, doc);

  s.bits_per_byte = std::numeric_limits<double>::quiet_NaN();
  s.domain_bits_per_byte.clear();
  const Json stopped = Json::parse(daa::obs::summary_json(s));
  EXPECT_TRUE(stopped["val_bits_per_byte"].is_null());
  EXPECT_EQ(stopped["val_bits_per_byte_per_domain"], Json::object());
}

}  // namespace
