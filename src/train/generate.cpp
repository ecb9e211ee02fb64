// `daa-swarm generate` (see trainer.hpp): a language-model checkpoint loaded on the generation
// layout, then sampling with the key/value cache of model::Generator, in lockstep on every rank.
#include <fmt/format.h>

#include <string>
#include <vector>

#include "checkpointing.hpp"
#include "daa/core/clock.hpp"
#include "daa/core/error.hpp"
#include "daa/model/generation.hpp"
#include "daa/model/language_model.hpp"
#include "daa/parallel/exchange.hpp"
#include "daa/train/trainer.hpp"

namespace daa::train {

core::Config generation_config(core::Config config, int ranks) {
  config.parallel.pipeline_stages = 1;
  config.parallel.stage_blocks.clear();
  config.parallel.micro_batches = 1;
  config.parallel.expert_parallel = config.moe.experts % ranks == 0 ? ranks : 1;
  config.train.global_batch = ranks;  // unused; keeps the layout checks satisfied
  return config;
}

GeneratedText generate_text(const core::Config& input, const Task& task,
                            const parallel::Communicator& world, const GenerateOptions& options) {
  const core::Config config = generation_config(input, world.size());
  GeneratedText out;
  out.prompt = options.prompt;
  const std::vector<int> prompt = world.agreed([&] {
    if (!task.tokenizer())
      throw InputError("generate: '" + config.source +
                       "' trains a classifier; generate needs a language-model input ([data] "
                       "dataset = \"text\")");
    if (options.prompt.empty()) throw InputError("generate: --prompt is empty");
    if (options.tokens < 0) throw InputError("generate: --tokens must be at least 0");
    std::vector<int> encoded = task.tokenizer()->encode(options.prompt);
    if (int(encoded.size()) > config.model.seq_len)
      throw InputError(fmt::format(
          "generate: the prompt is {} tokens, longer than the model's context of [model] seq_len "
          "= {} tokens",
          encoded.size(), config.model.seq_len));
    return encoded;
  });

  const parallel::Topology topology(world, config,
                                    model::stage_costs(config, task.inputs(), task.outputs()));
  const std::unique_ptr<model::Model> model =
      model::make_model(config, topology, task.inputs(), task.outputs());
  const TrainingParts parts{config, topology, *model};
  std::vector<std::string> notes;
  out.step = world.agreed(
      [&] { return load_checkpoint(parts, options.checkpoint, LoadScope::model_only, notes); });

  model::Generator<float> generator(*model->language_model());
  const auto start = core::Clock::now();
  std::vector<float> logits = generator.prefill(prompt);
  std::vector<int> generated;
  for (int i = 0; i < options.tokens; ++i) {
    // Rank 0 draws and every rank follows it: expert rows computed in differently sized GEMMs on
    // their home ranks need not round alike on every rank.
    int token = world.is_root() ? model::sample(logits, options.temperature, options.top_k,
                                                options.seed, generator.position())
                                : 0;
    token = parallel::broadcast_object(world, token);
    generated.push_back(token);
    if (i + 1 == options.tokens) break;
    if (generator.full()) {
      out.context_full = true;
      break;
    }
    logits = generator.step(token);
  }
  out.seconds = core::seconds_since(start);
  out.prompt_tokens = int(prompt.size());
  out.new_tokens = int(generated.size());
  out.text = task.tokenizer()->decode(generated);
  return out;
}

}  // namespace daa::train
