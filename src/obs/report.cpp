// Progress lines and run summaries (see report.hpp).
#include "daa/obs/report.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "daa/core/error.hpp"

namespace daa::obs {

ProgressLog::ProgressLog(bool active, const std::string& log_path, bool append) : active_(active) {
  if (active_ && !log_path.empty()) {
    file_.open(log_path, std::ios::out | (append ? std::ios::app : std::ios::trunc));
    if (!file_) throw Error("obs: cannot write log file '" + log_path + "'");
  }
}

void ProgressLog::line(const std::string& text) {
  if (!active_) return;
  std::cout << text << '\n' << std::flush;
  if (file_.is_open()) file_ << text << '\n' << std::flush;
}

std::string format_duration(double seconds) {
  const auto total = std::int64_t(std::llround(std::max(seconds, 0.0)));
  const auto h = total / 3600, m = (total / 60) % 60, s = total % 60;
  return h > 0 ? fmt::format("{}:{:02}:{:02}", h, m, s) : fmt::format("{}:{:02}", m, s);
}

std::string summary_text(const RunSummary& s) {
  std::string out;
  out += fmt::format("summary: {} steps ({} epochs) on {} ranks, global batch {}\n", s.steps,
                     s.epochs, s.ranks, s.global_batch);
  if (s.stopped_by_signal)
    out += fmt::format(
        "summary: final loss {:.4f}, train accuracy {:.2f}% (no final evaluation: stopped by a "
        "signal)\n",
        s.final_loss, 100 * s.train_accuracy);
  else if (s.model == "language-model") {
    std::string domains;
    for (const auto& [domain, bits] : s.domain_bits_per_byte)
      domains += fmt::format("{}{} {:.3f}", domains.empty() ? "" : ", ", domain, bits);
    out += fmt::format(
        "summary: final loss {:.4f}, validation loss {:.4f}, {:.3f} bits/byte ({}), next-token "
        "accuracy {:.2f}%\n",
        s.final_loss, s.test_loss, s.bits_per_byte, domains, 100 * s.test_accuracy);
  } else
    out += fmt::format(
        "summary: final loss {:.4f}, train accuracy {:.2f}%, test accuracy {:.2f}% (test loss "
        "{:.4f})\n",
        s.final_loss, 100 * s.train_accuracy, 100 * s.test_accuracy, s.test_loss);
  if (s.model == "language-model")
    out += fmt::format(
        "summary: {:.0f} tokens/s ({:.1f} sequences/s); training {:.1f} s, whole run {:.1f} s\n",
        s.tokens_per_s, s.samples_per_s, s.train_seconds, s.wall_seconds);
  else
    out += fmt::format("summary: {:.0f} samples/s; training {:.1f} s, whole run {:.1f} s\n",
                       s.samples_per_s, s.train_seconds, s.wall_seconds);
  out += fmt::format(
      "summary: time per phase: compute {:.1f} s, communication {:.1f} s (of which token "
      "all-to-all {:.1f} s), data {:.1f} s, eval {:.1f} s\n",
      s.phases.compute, s.phases.comm, s.phases.dispatch, s.phases.data, s.phases.eval);
  out += fmt::format("summary: expert FFNs run at {:.1f} GFLOP/s per rank\n", s.expert_gflops);
  if (s.attention_gflops > 0)
    out += fmt::format("summary: attention runs at {:.1f} GFLOP/s per rank\n", s.attention_gflops);
  out +=
      fmt::format("summary: aggregation {}: {:.1f} s in gradient rounds, {:.1f} s in consensus\n",
                  s.robust, s.aggregation_seconds, s.consensus_seconds);
  if (s.staging_bytes > 0)
    out += fmt::format("summary: gradient staging to host and back: {:.1f} MB in {:.2f} s\n",
                       double(s.staging_bytes) * 1e-6, s.staging_seconds);
  if (!s.byzantine.empty()) out += fmt::format("summary: simulated faults: {}\n", s.byzantine);
  if (!s.ledger.empty()) {
    std::string suspects;
    for (const LedgerRow& r : s.ledger)
      if (r.suspect)
        suspects += fmt::format("{}rank {} ({}, reputation {:.3f})", suspects.empty() ? "" : ", ",
                                r.rank, r.host.empty() ? "?" : r.host, r.reputation);
    out += fmt::format("summary: ledger suspects: {}\n", suspects.empty() ? "none" : suspects);
  }
  if (s.start_step > 0) out += fmt::format("summary: restarted at step {}\n", s.start_step);
  if (s.checkpoints > 0)
    out += fmt::format("summary: {} checkpoint{} in {:.2f} s ({:.1f}% of training), newest {}\n",
                       s.checkpoints, s.checkpoints == 1 ? "" : "s", s.checkpoint_seconds,
                       s.train_seconds > 0 ? 100 * s.checkpoint_seconds / s.train_seconds : 0.0,
                       s.last_checkpoint);
  if (s.stopped_by_signal)
    out += fmt::format(
        "summary: stopped by a signal after step {}, checkpointed: resubmit to continue\n",
        s.steps);
  out += fmt::format("summary: {} parameters, checksum {}", s.parameters, s.parameter_checksum);
  return out;
}

std::string summary_json(const RunSummary& s) {
  // Keys keep the order written here (ordered_json).
  using Json = nlohmann::ordered_json;
  Json ledger = Json::array();
  for (const LedgerRow& r : s.ledger)
    ledger.push_back({{"rank", r.rank},
                      {"host", r.host},
                      {"reputation", r.reputation},
                      {"rounds", r.rounds},
                      {"accepted", r.accepted},
                      {"rejected", r.rejected},
                      {"accusations", r.accusations},
                      {"reward", r.reward},
                      {"quarantined", r.quarantined},
                      {"suspect", r.suspect}});
  Json doc = {
      {"name", s.name},
      {"ranks", s.ranks},
      {"steps", s.steps},
      {"epochs", s.epochs},
      {"global_batch", s.global_batch},
      {"final_loss", s.final_loss},
      {"train_accuracy", s.train_accuracy},
      {"test_loss", s.test_loss},
      {"test_accuracy", s.test_accuracy},
      {"test_accuracy_per_epoch", s.test_accuracy_per_epoch},
      {"samples_per_s", s.samples_per_s},
      {"steady_samples_per_s", s.steady_samples_per_s},
  };
  // The language model's figures, for scripts/bench-peer-lm; a classifier's document keeps its
  // keys as they were.
  const bool lm = s.model == "language-model";
  if (lm) {
    Json domains = Json::object();
    for (const auto& [domain, bits] : s.domain_bits_per_byte) domains[domain] = bits;
    doc["model"] = s.model;
    doc["tokens_per_s"] = s.tokens_per_s;
    doc["val_bits_per_byte"] = s.bits_per_byte;
    doc["val_bits_per_byte_per_domain"] = domains;
  }
  doc["train_seconds"] = s.train_seconds;
  doc["wall_seconds"] = s.wall_seconds;
  doc["phases"] = {{"data_s", s.phases.data},
                   {"compute_s", s.phases.compute},
                   {"comm_s", s.phases.comm},
                   {"dispatch_s", s.phases.dispatch},
                   {"eval_s", s.phases.eval}};
  doc["expert_gflops"] = s.expert_gflops;
  if (lm) doc["attention_gflops"] = s.attention_gflops;
  const Json rest = {
      {"parameters", s.parameters},
      {"parameter_checksum", s.parameter_checksum},
      {"robust", s.robust},
      {"byzantine", s.byzantine},
      {"aggregation_s", s.aggregation_seconds},
      {"consensus_s", s.consensus_seconds},
      {"staging_s", s.staging_seconds},
      {"staging_bytes", s.staging_bytes},
      {"ledger", ledger},
      {"start_step", s.start_step},
      {"checkpoints", s.checkpoints},
      {"checkpoint_s", s.checkpoint_seconds},
      {"last_checkpoint", s.last_checkpoint},
      {"stopped_by_signal", s.stopped_by_signal},
  };
  for (const auto& [key, value] : rest.items()) doc[key] = value;
  if (lm) {
    doc["peak_resident_bytes"] = s.peak_resident_bytes;
    doc["memory_estimate_bytes"] = s.memory_estimate_bytes;
    doc["memory_budget_bytes"] = s.memory_budget_bytes;
  }
  // Non-finite numbers come out as null, finite ones round-trippable; bytes that are not UTF-8 (a
  // host name, a path) become U+FFFD instead of failing the write.
  return doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

void write_text_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::error_code ec;
  {
    std::ofstream out(tmp, std::ios::out | std::ios::trunc);
    out << text;
    if (!out.flush()) {
      const std::string reason = std::strerror(errno);
      std::filesystem::remove(tmp, ec);
      throw Error("obs: cannot write '" + path + "': " + reason);
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    const std::string reason = ec.message();
    std::filesystem::remove(tmp, ec);
    throw Error("obs: cannot write '" + path + "': " + reason);
  }
}

}  // namespace daa::obs
