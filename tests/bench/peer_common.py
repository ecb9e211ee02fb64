"""The torch side shared by the PyTorch peers (peer_moe.py, peer_lm.py) of scripts/bench-peer*.

What both peers do alike: RMSNorm, the MoE FFN as a Python loop over experts with the Switch
load-balancing loss, process setup (threads, gloo), AdamW with weight decay on matrices only,
the steady-state timer, the loss averaged over ranks, the one JSON line on stdout, and starting
one process or --nproc DDP processes. Import it only after peer_args.parse (which pins OpenBLAS's
threads before torch loads).
"""

import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def sequential_moe(u, router_logits, experts, top_k, normalize_gates, aux_coef):
    """Routes the rows of u [N, d] to their top-k experts and combines the gated outputs.

    The way PyTorch MoE code usually runs experts (Megatron's SequentialMLP, DeepSpeed MoE,
    Mixtral): a loop over experts, each gathering its tokens with index_select and scattering the
    gated results back with index_add_. Returns (out [N, d], Switch aux loss
    aux_coef * E * sum_e f_e P_e).
    """
    tokens, num_experts = u.shape[0], len(experts)
    probs = router_logits.softmax(dim=-1)                            # [N, E]
    top_p, top_e = probs.topk(top_k, dim=-1)                         # [N, k]
    gates = top_p / top_p.sum(dim=-1, keepdim=True) if normalize_gates else top_p
    flat_e = top_e.reshape(-1)                                       # [N*k]
    flat_gate = gates.reshape(-1, 1)
    flat_tok = torch.arange(tokens).repeat_interleave(top_k)
    out = torch.zeros_like(u)
    for e, expert in enumerate(experts):
        # Every expert runs, even on zero tokens, so DDP sees all parameters used.
        mask = flat_e == e
        tok = flat_tok[mask]
        out.index_add_(0, tok, expert(u.index_select(0, tok)) * flat_gate[mask])
    with torch.no_grad():
        frac = torch.bincount(flat_e, minlength=num_experts).float() / (tokens * top_k)
    return out, aux_coef * num_experts * (frac * probs.mean(dim=0)).sum()


def setup_process(rank, world, a):
    """Threads of this process, and the gloo process group under --ddp."""
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    if a.ddp:
        dist.init_process_group("gloo", rank=rank, world_size=world)


def adamw(model, weight_decay, lr, betas, eps):
    """AdamW with weight decay on weight matrices only (not on biases and gains), as daa-swarm."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=betas, eps=eps)


def rank0_logger(rank):
    """A log(msg) that writes to stderr on rank 0 only."""
    def log(msg):
        if rank == 0:
            print(msg, file=sys.stderr, flush=True)
    return log


class SteadyTimer:
    """Wall time of a run and of its steady part, the steps after the first `warmup`.

    Call at_step(step) before each step. Under DDP both ends are barriers, so the slowest rank
    sets the time.
    """

    def __init__(self, warmup, ddp):
        self.warmup, self.ddp = warmup, ddp
        self.start, self.steady_start = time.perf_counter(), None

    def at_step(self, step):
        if step == self.warmup:
            if self.ddp:
                dist.barrier()
            self.steady_start = time.perf_counter()

    def stop(self, steps):
        """(timed steps, their seconds, the whole run's seconds) after `steps` steps; a run no
        longer than the warm-up times all its steps."""
        if self.ddp:
            dist.barrier()
        end = time.perf_counter()
        if self.steady_start is None or steps <= self.warmup:
            return steps, end - self.start, end - self.start
        return steps - self.warmup, end - self.steady_start, end - self.start


def mean_over_ranks(value, a, world):
    """The mean of a number over the DDP ranks (e.g. the last step's loss: with equal local
    batches, the loss on the whole global batch)."""
    t = torch.tensor([value], dtype=torch.float64)
    if a.ddp:
        dist.all_reduce(t)
        t /= world
    return float(t.item())


def emit(result, rank, a):
    """Rank 0 prints the result as the one JSON line on stdout; under DDP every rank waits for
    it, so no rank leaves before the line is out."""
    if rank == 0:
        print(json.dumps(result, separators=(",", ":")), flush=True)
    if a.ddp:
        dist.barrier()


def _spawned(rank, train, world, a):
    train(rank, world, a)
    # torch 1.13 can deadlock tearing DDP down: ~Reducer -> ~ProcessGroupGloo joins a gloo worker
    # thread that waits for the GIL the destructor holds (seen here in a 2-process run). Nothing
    # is left to write, so leave without running destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(train, a):
    """Runs train(rank, world, a): in this process, or as one of the ranks torch.distributed.run
    started, or in --nproc processes spawned here."""
    if not a.ddp:
        train(0, 1, a)
    elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torch.distributed.run
        _spawned(int(os.environ["RANK"]), train, int(os.environ["WORLD_SIZE"]), a)
    else:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        torch.multiprocessing.spawn(_spawned, args=(train, a.nproc, a), nprocs=a.nproc, join=True)
