// Prometheus text exposition (see metrics.hpp).
#include "daa/obs/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "daa/core/error.hpp"

namespace daa::obs {

namespace {

bool valid_name(const std::string& name, bool colon_allowed) {
  if (name.empty()) return false;
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = letter(c) || (colon_allowed && c == ':') || (i > 0 && digit(c));
    if (!ok) return false;
  }
  return true;
}

void check_metric_name(const std::string& name) {
  if (!valid_name(name, true))
    throw Error("metrics: invalid metric name '" + name +
                "' (must match [a-zA-Z_:][a-zA-Z0-9_:]*)");
}

// Label names starting with "__" are reserved for Prometheus itself.
void check_labels(const std::string& metric, const Labels& labels) {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const std::string& name = labels[i].first;
    if (!valid_name(name, false) || name.starts_with("__"))
      throw Error("metrics: invalid label name '" + name + "' of metric '" + metric +
                  "' (must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __)");
    for (std::size_t j = 0; j < i; ++j)
      if (labels[j].first == name)
        throw Error("metrics: label '" + name + "' given twice for metric '" + metric + "'");
  }
}

std::string escape(const std::string& text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (quote && c == '"')
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

// `extra` is appended after the given labels (the histogram's le).
std::string label_set(const Labels& labels, const std::string& extra = {}) {
  if (labels.empty() && extra.empty()) return {};
  std::string out = "{";
  for (const auto& [name, value] : labels) {
    if (out.size() > 1) out += ',';
    out += name + "=\"" + escape(value, true) + '"';
  }
  if (!extra.empty()) out += (out.size() > 1 ? "," : "") + extra;
  return out + "}";
}

}  // namespace

std::string prometheus_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

Histogram::Histogram(std::vector<double> upper_bounds) : upper_bounds_(std::move(upper_bounds)) {
  for (std::size_t i = 0; i < upper_bounds_.size(); ++i) {
    if (!std::isfinite(upper_bounds_[i]))
      throw Error(fmt::format("metrics: histogram bound {} is not finite", upper_bounds_[i]));
    if (i > 0 && !(upper_bounds_[i - 1] < upper_bounds_[i]))
      throw Error(fmt::format("metrics: histogram bounds not increasing ({} then {})",
                              upper_bounds_[i - 1], upper_bounds_[i]));
  }
  cumulative_.assign(upper_bounds_.size(), 0);
}

Histogram Histogram::step_seconds() {
  return Histogram(
      {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
}

void Histogram::observe(double value) {
  // NaN is in no finite bucket, only in +Inf (count), as Prometheus clients do.
  if (!std::isnan(value)) {
    const auto first = std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value);
    for (auto i = std::size_t(first - upper_bounds_.begin()); i < cumulative_.size(); ++i)
      ++cumulative_[i];
  }
  ++count_;
  sum_ += value;
}

// Called after the sample's labels were checked, so a rejected sample leaves the text unchanged.
void PrometheusText::open_family(const std::string& name, const std::string& help,
                                 const char* type) {
  check_metric_name(name);
  if (name == current_family_) {
    if (current_type_ != type)
      throw Error("metrics: metric '" + name + "' written as " + current_type_ + " and " + type);
    return;
  }
  if (closed_families_.count(name))
    throw Error("metrics: samples of metric '" + name +
                "' must be consecutive; it reappears after another metric");
  if (!current_family_.empty()) closed_families_.insert(current_family_);
  current_family_ = name;
  current_type_ = type;
  text_ += "# HELP " + name + ' ' + escape(help, false) + '\n';
  text_ += "# TYPE " + name + ' ' + type + '\n';
}

void PrometheusText::gauge(const std::string& name, const std::string& help, double value,
                           const Labels& labels) {
  check_labels(name, labels);
  open_family(name, help, "gauge");
  text_ += name + label_set(labels) + ' ' + prometheus_value(value) + '\n';
}

void PrometheusText::counter(const std::string& name, const std::string& help, double value,
                             const Labels& labels) {
  if (!name.ends_with("_total")) throw Error("metrics: counter '" + name + "' must end in _total");
  check_labels(name, labels);
  open_family(name, help, "counter");
  text_ += name + label_set(labels) + ' ' + prometheus_value(value) + '\n';
}

void PrometheusText::histogram(const std::string& name, const std::string& help,
                               const Histogram& histogram, const Labels& labels) {
  check_labels(name, labels);
  for (const auto& label : labels)
    if (label.first == "le")
      throw Error("metrics: label 'le' of histogram '" + name + "' is reserved for its buckets");
  open_family(name, help, "histogram");
  const auto& bounds = histogram.upper_bounds();
  const auto& counts = histogram.cumulative_counts();
  for (std::size_t i = 0; i < bounds.size(); ++i)
    text_ += name + "_bucket" + label_set(labels, "le=\"" + prometheus_value(bounds[i]) + '"') +
             ' ' + std::to_string(counts[i]) + '\n';
  text_ += name + "_bucket" + label_set(labels, "le=\"+Inf\"") + ' ' +
           std::to_string(histogram.count()) + '\n';
  const std::string plain = label_set(labels);
  text_ += name + "_sum" + plain + ' ' + prometheus_value(histogram.sum()) + '\n';
  text_ += name + "_count" + plain + ' ' + std::to_string(histogram.count()) + '\n';
}

}  // namespace daa::obs
