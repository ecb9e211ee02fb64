// The run's status document (see status.hpp).
#include "daa/obs/status.hpp"

#include <nlohmann/json.hpp>

namespace daa::obs {

namespace {

// Keys keep the order written here (ordered_json), so the file reads the same way every time.
using Json = nlohmann::ordered_json;

// `value_key` names what RankNote::value means in this list.
Json rank_notes(const std::vector<RankNote>& notes, const char* value_key) {
  Json out = Json::array();
  for (const RankNote& note : notes)
    out.push_back({{"rank", note.rank}, {"host", note.host}, {value_key, note.value}});
  return out;
}

}  // namespace

std::string status_json(const RunStatus& s) {
  const Json doc = {
      {"run", s.run},
      {"state", s.state},
      {"health", s.health},
      {"step", s.step},
      {"total_steps", s.total_steps},
      {"epoch", s.epoch},
      {"loss", s.loss},
      {"train_accuracy", s.train_accuracy},
      {"samples_per_s", s.samples_per_s},
      {"seconds_per_step", s.seconds_per_step},
      {"layout",
       {{"ranks", s.ranks},
        {"pipeline_stages", s.pipeline_stages},
        {"data_parallel", s.data_parallel},
        {"expert_parallel", s.expert_parallel},
        {"micro_batches", s.micro_batches}}},
      {"suspects", rank_notes(s.suspects, "reputation")},
      {"stragglers", rank_notes(s.stragglers, "compute_ms")},
      {"median_compute_ms", s.median_compute_ms},
      {"quarantined", s.quarantined},
      {"last_checkpoint_step", s.last_checkpoint_step},
      {"last_checkpoint", s.last_checkpoint},
      {"updated_unix_ms", s.updated_unix_ms},
      {"message", s.message},
  };
  // Non-finite numbers come out as null, finite ones round-trippable; bytes that are not UTF-8 (a
  // host name, a message) become U+FFFD instead of failing the write.
  return doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace daa::obs
