// The run's metrics in the Prometheus text exposition format 0.0.4, the file a node-exporter
// textfile collector serves (`metrics.prom` in the run directory, replaced atomically).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace daa::obs {

using Labels = std::vector<std::pair<std::string, std::string>>;

// Cumulative buckets as Prometheus defines them: bucket i counts the observations <= bound i.
class Histogram {
 public:
  // Sorted, strictly increasing and finite (throws daa::Error otherwise); +Inf is implied.
  explicit Histogram(std::vector<double> upper_bounds);
  // Step times from 1 ms to 60 s.
  static Histogram step_seconds();

  void observe(double value);

  const std::vector<double>& upper_bounds() const { return upper_bounds_; }
  // One per upper bound, cumulative; the +Inf bucket is count().
  const std::vector<std::uint64_t>& cumulative_counts() const { return cumulative_; }
  std::uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> upper_bounds_;
  std::vector<std::uint64_t> cumulative_;
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

// Builds one exposition text. Each family's # HELP and # TYPE lines are written once, before its
// first sample; samples of one family must be added consecutively, so a family that reappears
// after another throws daa::Error (the file would be invalid). Metric and label names are
// validated (daa::Error naming them); label values are escaped.
class PrometheusText {
 public:
  void gauge(const std::string& name, const std::string& help, double value,
             const Labels& labels = {});
  // `name` must end in _total.
  void counter(const std::string& name, const std::string& help, double value,
               const Labels& labels = {});
  // Writes name_bucket{...,le="..."} for every bound and +Inf, name_sum and name_count. The
  // label "le" is reserved for the buckets.
  void histogram(const std::string& name, const std::string& help, const Histogram& histogram,
                 const Labels& labels = {});

  const std::string& text() const { return text_; }

 private:
  void open_family(const std::string& name, const std::string& help, const char* type);

  std::string text_;
  std::string current_family_;
  std::string current_type_;
  std::set<std::string> closed_families_;
};

// A sample value as Prometheus parses it back exactly: shortest round-trip digits, "NaN",
// "+Inf", "-Inf".
std::string prometheus_value(double value);

}  // namespace daa::obs
