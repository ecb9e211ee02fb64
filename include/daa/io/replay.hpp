// `daa-swarm replay`: a run's story told from its newest valid checkpoint (which carries the whole
// history): configuration and layout, loss and accuracy, expert load and routing bias over time,
// expert specialization (the classifier's classes; the language model's domains and token kinds,
// with each expert's specialty and the mutual information between expert and category per layer),
// and the ledger. As text, as CSV tables, or as one JSON document.
#pragma once

#include <ostream>
#include <string>

namespace daa::io {

struct ReplayOptions {
  std::string path;     // a checkpoint file, a run directory, or its checkpoints/ directory
  std::string csv_dir;  // when set, also write the tables as CSV files there
  bool json = false;    // print one JSON document instead of text
};

// Single process. A corrupt checkpoint of a directory is skipped with a warning on stderr and the
// next older one used; a named file must be valid. Throws CheckpointError (bad input) otherwise.
void replay(const ReplayOptions& options, std::ostream& out);

}  // namespace daa::io
