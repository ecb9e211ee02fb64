// The run's status document (see status.hpp).
#include "daa/obs/status.hpp"

#include <fmt/format.h>

#include "daa/core/json.hpp"

namespace daa::obs {

using core::json_number;
using core::json_string;

namespace {

// `value_key` names what RankNote::value means in this list.
std::string rank_notes(const std::vector<RankNote>& notes, const char* value_key) {
  std::string out;
  for (std::size_t i = 0; i < notes.size(); ++i)
    out += fmt::format("{}\n    {{\"rank\": {}, \"host\": {}, \"{}\": {}}}", i ? "," : "",
                       notes[i].rank, json_string(notes[i].host), value_key,
                       json_number(notes[i].value));
  return out.empty() ? out : out + "\n  ";
}

}  // namespace

std::string status_json(const RunStatus& s) {
  std::string quarantined;
  for (std::size_t i = 0; i < s.quarantined.size(); ++i)
    quarantined += fmt::format("{}{}", i ? ", " : "", s.quarantined[i]);
  return fmt::format(
      "{{\n"
      "  \"run\": {},\n"
      "  \"state\": {},\n"
      "  \"health\": {},\n"
      "  \"step\": {},\n"
      "  \"total_steps\": {},\n"
      "  \"epoch\": {},\n"
      "  \"loss\": {},\n"
      "  \"train_accuracy\": {},\n"
      "  \"samples_per_s\": {},\n"
      "  \"seconds_per_step\": {},\n"
      "  \"layout\": {{\"ranks\": {}, \"pipeline_stages\": {}, \"data_parallel\": {}, "
      "\"expert_parallel\": {}, \"micro_batches\": {}}},\n"
      "  \"suspects\": [{}],\n"
      "  \"stragglers\": [{}],\n"
      "  \"median_compute_ms\": {},\n"
      "  \"quarantined\": [{}],\n"
      "  \"last_checkpoint_step\": {},\n"
      "  \"last_checkpoint\": {},\n"
      "  \"updated_unix_ms\": {},\n"
      "  \"message\": {}\n"
      "}}\n",
      json_string(s.run), json_string(s.state), json_string(s.health), s.step, s.total_steps,
      s.epoch, json_number(s.loss), json_number(s.train_accuracy), json_number(s.samples_per_s),
      json_number(s.seconds_per_step), s.ranks, s.pipeline_stages, s.data_parallel,
      s.expert_parallel, s.micro_batches, rank_notes(s.suspects, "reputation"),
      rank_notes(s.stragglers, "compute_ms"), json_number(s.median_compute_ms), quarantined,
      s.last_checkpoint_step, json_string(s.last_checkpoint), s.updated_unix_ms,
      json_string(s.message));
}

}  // namespace daa::obs
