#!/usr/bin/python3
"""PyTorch peer for daa-swarm's side-by-side training-throughput benchmark.

Trains the same fp32 Mixture-of-Experts classifier on Fashion-MNIST that daa-swarm trains
(inputs/fashion-mnist.toml), written the way PyTorch MoE code usually is: a router, then a
Python loop over experts that gathers each expert's tokens with a boolean mask + index_select
and scatters the gated results back with index_add_ (Megatron's SequentialMLP, DeepSpeed MoE).
It is a throughput reference, not a reimplementation: initialisation, data order and the
learning-rate schedule are not bit-matched to daa-swarm (see CAVEATS below).

Model:  h = GELU(x W_in + b_in)
        per MoE block: u = RMSNorm(h); p = softmax(u W_r); top-k of p, renormalised gates;
                       h = h + sum_k gate_k * (W2_e GELU(W1_e u + b1_e) + b2_e)
                       aux = coef * E * sum_e f_e P_e   (Switch load balancing, coef 0.01)
        logits = h W_out + b_out;  loss = CE(mean) + sum(aux)
Optimiser: AdamW(lr 2e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on weight matrices
only, as daa-swarm does), global-norm gradient clip 1.0, constant learning rate.

Run:  /usr/bin/python3 tests/bench/peer_moe.py --steps 300 --threads 1
      /usr/bin/python3 tests/bench/peer_moe.py --steps 300 --ddp --nproc 2   (gloo, 1 thread/rank)
Rank 0 prints exactly one line on stdout, JSON:
  {"peer":"pytorch","ranks":W,"threads":T,"steps":N,"samples_per_s":X,"final_loss":L}
--steps counts all optimiser steps (like daa-swarm's train.max_steps); the first
--warmup-steps of them are excluded from timing. Progress goes to stderr.

CAVEATS: use Debian's /usr/bin/python3 (python3-torch 1.13); OPENBLAS_NUM_THREADS and
OMP_NUM_THREADS are pinned to the thread count before torch is imported, because torch's
set_num_threads does not reach Debian's generic (OpenBLAS pthread) BLAS.
"""

import gzip
import math
import os
import struct

import peer_args

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def parse_args(argv=None):
    ap = peer_args.parser(__doc__)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--moe-layers", type=int, default=2)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--d-ff", type=int, default=256)
    ap.add_argument("--global-batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300,
                    help="optimiser steps in all, warm-up included (default 300)")
    peer_args.add_run_options(ap, "leading steps excluded from timing (default 20)")
    ap.add_argument("--aux-coef", type=float, default=0.01)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--data-dir", default=DATA_DIR)
    a = peer_args.parse(ap, argv)
    if a.steps <= a.warmup_steps:
        ap.error(f"--steps ({a.steps}) must exceed --warmup-steps ({a.warmup_steps})")
    if a.top_k < 1 or a.top_k > a.experts:
        ap.error("--top-k must be in 1..--experts")
    return a


# Thread pinning must happen before torch (and its OpenBLAS) is loaded. Parse argv early.
_ARGS = parse_args() if __name__ == "__main__" else None

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import peer_common as common  # noqa: E402


# ----------------------------------------------------------------------------------- data ----
def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: size {data.size} does not match header {dims}")
    return data.reshape(dims)


def load_train(data_dir):
    images = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"))
    x = (images.reshape(images.shape[0], -1).astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


class Batches:
    """Global batches from a per-epoch shuffle; each rank takes its contiguous slice."""

    def __init__(self, n, global_batch, rank, world, seed):
        self.n, self.gb, self.rank, self.world = n, global_batch, rank, world
        self.local = global_batch // world
        self.gen = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(n, generator=self.gen), 0

    def next(self):
        if self.pos + self.gb > self.n:  # drop the ragged tail, reshuffle
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        lo = self.pos + self.rank * self.local
        idx = self.perm[lo:lo + self.local]
        self.pos += self.gb
        return idx


# ---------------------------------------------------------------------------------- model ----
class Expert(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class MoEBlock(nn.Module):
    def __init__(self, d_model, d_ff, experts, top_k, aux_coef):
        super().__init__()
        self.norm = common.RMSNorm(d_model)
        self.router = nn.Linear(d_model, experts, bias=False)
        self.experts = nn.ModuleList(Expert(d_model, d_ff) for _ in range(experts))
        self.top_k, self.aux_coef = top_k, aux_coef

    def forward(self, h):
        u = self.norm(h)
        out, aux = common.sequential_moe(u, self.router(u), self.experts, self.top_k, True,
                                         self.aux_coef)
        return h + out, aux


class MoEClassifier(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.inp = nn.Linear(784, a.d_model)
        self.blocks = nn.ModuleList(
            MoEBlock(a.d_model, a.d_ff, a.experts, a.top_k, a.aux_coef)
            for _ in range(a.moe_layers))
        self.out = nn.Linear(a.d_model, 10)
        for m in self.modules():  # daa-swarm's default: weights ~ N(0, 1/fan_in), zero biases
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.in_features))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        h = F.gelu(self.inp(x))
        aux_total = h.new_zeros(())
        for block in self.blocks:
            h, aux = block(h)
            aux_total = aux_total + aux
        return self.out(h), aux_total


# ------------------------------------------------------------------------------- training ----
def train(rank, world, a):
    common.setup_process(rank, world, a)
    if a.global_batch % world:
        raise SystemExit(f"--global-batch {a.global_batch} is not divisible by {world} ranks")

    x_all, y_all = load_train(a.data_dir)
    torch.manual_seed(a.seed)  # same initial weights on every rank (DDP also broadcasts)
    model = MoEClassifier(a)
    if a.ddp:
        model = nn.parallel.DistributedDataParallel(model)
    opt = common.adamw(model, 0.01, a.lr, (0.9, 0.999), 1e-8)
    batches = Batches(x_all.shape[0], a.global_batch, rank, world, a.seed)
    log = common.rank0_logger(rank)
    log(f"peer_moe: ranks={world} threads={a.threads} torch={torch.__version__} "
        f"params={sum(p.numel() for p in model.parameters())} steps={a.steps} "
        f"(warm-up {a.warmup_steps})")
    timer = common.SteadyTimer(a.warmup_steps, a.ddp)
    loss_val = float("nan")
    for step in range(a.steps):
        timer.at_step(step)
        idx = batches.next()
        xb, yb = x_all.index_select(0, idx), y_all.index_select(0, idx)
        logits, aux = model(xb)
        loss = F.cross_entropy(logits, yb) + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_val = loss.item()
        if a.log_every and (step % a.log_every == 0 or step == a.steps - 1):
            log(f"step {step:5d}  loss {loss_val:.4f} (rank 0)")
    timed, elapsed, _ = timer.stop(a.steps)
    final = common.mean_over_ranks(loss_val, a, world)
    common.emit({"peer": "pytorch", "ranks": world, "threads": a.threads, "steps": a.steps,
                 "samples_per_s": round(timed * a.global_batch / elapsed, 1),
                 "final_loss": round(final, 5)}, rank, a)


if __name__ == "__main__":
    common.launch(train, _ARGS)
