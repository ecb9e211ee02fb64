// Rank layout and communicators (see topology.hpp).
#include "daa/parallel/topology.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "daa/core/error.hpp"

namespace daa::parallel {

std::pair<int, int> Layout::stage_blocks(int stage) const {
  int first = 0;
  for (int s = 0; s < stage; ++s) first += blocks_per_stage[s];
  return {first, first + blocks_per_stage[stage]};
}

RankPlace Layout::place(int rank) const {
  RankPlace p;
  p.rank = rank;
  p.stage = rank / data_parallel;
  std::tie(p.first_block, p.last_block) = stage_blocks(p.stage);
  p.first_moe_layer = int(std::lower_bound(moe_blocks.begin(), moe_blocks.end(), p.first_block) -
                          moe_blocks.begin());
  p.last_moe_layer = int(std::lower_bound(moe_blocks.begin(), moe_blocks.end(), p.last_block) -
                         moe_blocks.begin());
  p.dp_index = rank % data_parallel;
  p.ep_rank = p.dp_index % expert_parallel;
  p.edp_index = p.dp_index / expert_parallel;
  p.local_experts = experts / expert_parallel;
  p.first_expert = p.ep_rank * p.local_experts;
  return p;
}

std::vector<std::string> Layout::describe() const {
  std::vector<std::string> lines;
  lines.push_back(
      fmt::format("layout: {} ranks = {} pipeline stage{} x {} data-parallel; expert parallelism "
                  "{} ({} experts "
                  "per rank per MoE layer), expert-data-parallel groups of {}",
                  ranks, pipeline_stages, pipeline_stages == 1 ? "" : "s", data_parallel,
                  expert_parallel, experts / expert_parallel, expert_data_parallel()));
  const int groups = data_parallel / expert_parallel;
  for (int s = 0; s < pipeline_stages; ++s) {
    const auto [first, last] = stage_blocks(s);
    const std::string prefix = pipeline_stages == 1 ? "" : fmt::format("stage {} ", s);
    if (pipeline_stages > 1)
      lines.push_back(fmt::format(
          "  stage {}: {} {}..{}{}{}", s, language_model ? "transformer blocks" : "MoE blocks",
          first, last - 1, s == 0 ? (language_model ? ", embedding" : ", input layer") : "",
          s == pipeline_stages - 1 ? (language_model ? ", final norm and head" : ", classifier")
                                   : ""));
    const int base = s * data_parallel;
    for (int g = 0; g < groups; ++g) {
      std::string members;
      for (int j = 0; j < expert_parallel; ++j)
        members += fmt::format("{}{}", j ? " " : "", base + g * expert_parallel + j);
      lines.push_back(fmt::format("  {}expert-parallel group {}: ranks {}", prefix, g, members));
    }
    for (int j = 0; j < expert_parallel; ++j) {
      std::string members;
      for (int g = 0; g < groups; ++g)
        members += fmt::format("{}{}", g ? " " : "", base + g * expert_parallel + j);
      lines.push_back(
          fmt::format("  {}expert-data-parallel group {}: ranks {}", prefix, j, members));
    }
  }
  for (int r = 0; r < ranks; ++r) {
    const RankPlace p = place(r);
    lines.push_back(
        fmt::format("  rank {:>3}: {}data-parallel index {}, experts {}..{} of each MoE layer", r,
                    pipeline_stages == 1 ? "" : fmt::format("stage {}, ", p.stage), p.dp_index,
                    p.first_expert, p.first_expert + p.local_experts - 1));
  }
  return lines;
}

namespace {

// Contiguous split of the blocks over `stages` stages (each at least one) minimizing the largest
// stage cost, where the first stage also pays `first` and the last `last`. Exact by dynamic
// programming; ties go to the split found first (fewer blocks on earlier stages).
std::vector<int> balanced_split(const StageCosts& costs, int stages) {
  const int blocks = int(costs.blocks.size());
  std::vector<double> prefix(std::size_t(blocks) + 1, 0.0);
  for (int b = 0; b < blocks; ++b)
    prefix[std::size_t(b) + 1] = prefix[std::size_t(b)] + costs.blocks[std::size_t(b)];
  const double inf = std::numeric_limits<double>::infinity();
  // best[s][b]: smallest largest-stage cost placing the first b blocks on the first s stages.
  std::vector<std::vector<double>> best(stages + 1, std::vector<double>(blocks + 1, inf));
  std::vector<std::vector<int>> take(stages + 1, std::vector<int>(blocks + 1, 0));
  best[0][0] = 0;
  for (int s = 1; s <= stages; ++s)
    for (int b = s; b <= blocks - (stages - s); ++b)
      for (int n = 1; n <= b - (s - 1); ++n) {
        const double cost = prefix[std::size_t(b)] - prefix[std::size_t(b - n)] +
                            (s == 1 ? costs.first : 0) + (s == stages ? costs.last : 0);
        const double worst = std::max(best[s - 1][b - n], cost);
        if (worst < best[s][b]) best[s][b] = worst, take[s][b] = n;
      }
  std::vector<int> split(stages);
  for (int s = stages, b = blocks; s >= 1; b -= take[s][b], --s) split[s - 1] = take[s][b];
  return split;
}

}  // namespace

Layout make_layout(const core::Config& config, int ranks, const StageCosts& costs) {
  core::validate_layout(config, ranks);
  Layout layout;
  layout.ranks = ranks;
  layout.pipeline_stages = config.parallel.pipeline_stages;
  layout.blocks = core::model_blocks(config);
  layout.moe_blocks = core::moe_blocks(config);
  layout.language_model = core::is_language_model(config);
  layout.data_parallel = ranks / layout.pipeline_stages;
  layout.expert_parallel = config.parallel.expert_parallel;
  layout.experts = config.moe.experts;
  if (int(costs.blocks.size()) != layout.blocks)
    throw Error(fmt::format("parallel::make_layout: {} block costs for a model of {} blocks",
                            costs.blocks.size(), layout.blocks));
  if (!config.parallel.stage_blocks.empty())
    layout.blocks_per_stage = core::parse_counts(config.parallel.stage_blocks);
  else
    layout.blocks_per_stage = balanced_split(costs, layout.pipeline_stages);
  return layout;
}

NodeRanks node_ranks(const Communicator& world) {
  MPI_Comm node = MPI_COMM_NULL;
  DAA_MPI_CHECK(
      MPI_Comm_split_type(world.comm(), MPI_COMM_TYPE_SHARED, world.rank(), MPI_INFO_NULL, &node));
  NodeRanks result;
  DAA_MPI_CHECK(MPI_Comm_rank(node, &result.local_rank));
  DAA_MPI_CHECK(MPI_Comm_size(node, &result.local_ranks));
  DAA_MPI_CHECK(MPI_Comm_free(&node));
  return result;
}

int device_for_rank(NodeRanks node, int visible_devices) {
  if (visible_devices < 1)
    throw InputError(
        fmt::format("GPU placement: no CUDA device is visible to rank {} of its node (check "
                    "CUDA_VISIBLE_DEVICES and the job's GPU request)",
                    node.local_rank));
  if (node.local_ranks > visible_devices)
    throw InputError(fmt::format(
        "GPU placement: {} ranks on this node but {} visible GPU(s); the CUDA build runs one rank "
        "per GPU (e.g. srun --ntasks-per-node={} --gpus-per-task=1)",
        node.local_ranks, visible_devices, visible_devices));
  return node.local_rank;
}

MPI_Comm Topology::split(const Communicator& world, int color, int key) {
  MPI_Comm comm = MPI_COMM_NULL;
  DAA_MPI_CHECK(MPI_Comm_split(world.comm(), color, key, &comm));
  return comm;
}

Topology::Topology(const Communicator& world, const core::Config& config, const StageCosts& costs)
    : layout_(make_layout(config, world.size(), costs)),
      place_(layout_.place(world.rank())),
      world_(world.comm(), world.name()),
      data_parallel_(split(world, place_.stage, place_.dp_index), "data-parallel"),
      expert_parallel_(
          split(world, place_.stage * layout_.expert_data_parallel() + place_.edp_index,
                place_.ep_rank),
          "expert-parallel"),
      expert_data_parallel_(
          split(world, place_.stage * layout_.expert_parallel + place_.ep_rank, place_.edp_index),
          "expert-data-parallel"),
      end_stages_(split(world,
                        layout_.pipeline_stages > 1 &&
                                (place_.stage == 0 || place_.stage == layout_.pipeline_stages - 1)
                            ? place_.dp_index
                            : MPI_UNDEFINED,
                        place_.stage),
                  "end-stages") {}

int Topology::previous_stage_rank() const {
  return place_.stage > 0 ? world_.rank() - layout_.data_parallel : -1;
}

int Topology::next_stage_rank() const {
  return place_.stage + 1 < layout_.pipeline_stages ? world_.rank() + layout_.data_parallel : -1;
}

Topology::~Topology() {
  for (const Communicator* c :
       {&data_parallel_, &expert_parallel_, &expert_data_parallel_, &end_stages_}) {
    MPI_Comm comm = c->comm();
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
}

}  // namespace daa::parallel
