// Rank layout and communicators (see topology.hpp).
#include "daa/parallel/topology.hpp"

#include <fmt/format.h>

namespace daa::parallel {

RankPlace Layout::place(int rank) const {
  RankPlace p;
  p.rank = rank;
  p.dp_index = rank % data_parallel;
  p.ep_rank = p.dp_index % expert_parallel;
  p.edp_index = p.dp_index / expert_parallel;
  p.local_experts = experts / expert_parallel;
  p.first_expert = p.ep_rank * p.local_experts;
  return p;
}

std::vector<std::string> Layout::describe() const {
  std::vector<std::string> lines;
  lines.push_back(fmt::format(
      "layout: {} ranks = {} data-parallel; expert parallelism {} ({} experts per rank per MoE "
      "layer), expert-data-parallel groups of {}",
      ranks, data_parallel, expert_parallel, experts / expert_parallel, expert_data_parallel()));
  for (int g = 0; g < data_parallel / expert_parallel; ++g) {
    std::string members;
    for (int j = 0; j < expert_parallel; ++j)
      members += fmt::format("{}{}", j ? " " : "", g * expert_parallel + j);
    lines.push_back(fmt::format("  expert-parallel group {}: ranks {}", g, members));
  }
  for (int j = 0; j < expert_parallel; ++j) {
    std::string members;
    for (int g = 0; g < data_parallel / expert_parallel; ++g)
      members += fmt::format("{}{}", g ? " " : "", g * expert_parallel + j);
    lines.push_back(fmt::format("  expert-data-parallel group {}: ranks {}", j, members));
  }
  for (int r = 0; r < ranks; ++r) {
    const RankPlace p = place(r);
    lines.push_back(
        fmt::format("  rank {:>3}: data-parallel index {}, experts {}..{} of each MoE layer", r,
                    p.dp_index, p.first_expert, p.first_expert + p.local_experts - 1));
  }
  return lines;
}

Layout make_layout(const core::Config& config, int ranks) {
  core::validate_layout(config, ranks);
  Layout layout;
  layout.ranks = ranks;
  layout.data_parallel = ranks;
  layout.expert_parallel = config.parallel.expert_parallel;
  layout.experts = config.moe.experts;
  return layout;
}

MPI_Comm Topology::split(const Communicator& world, int color, int key) {
  MPI_Comm comm = MPI_COMM_NULL;
  DAA_MPI_CHECK(MPI_Comm_split(world.comm(), color, key, &comm));
  return comm;
}

Topology::Topology(const Communicator& world, const core::Config& config)
    : layout_(make_layout(config, world.size())),
      place_(layout_.place(world.rank())),
      world_(world.comm(), world.name()),
      data_parallel_(split(world, 0, world.rank()), "data-parallel"),
      expert_parallel_(split(world, place_.edp_index, place_.ep_rank), "expert-parallel"),
      expert_data_parallel_(split(world, place_.ep_rank, place_.edp_index),
                            "expert-data-parallel") {}

Topology::~Topology() {
  for (const Communicator* c : {&data_parallel_, &expert_parallel_, &expert_data_parallel_}) {
    MPI_Comm comm = c->comm();
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
}

}  // namespace daa::parallel
