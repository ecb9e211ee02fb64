"""Command line shared by the PyTorch peers (peer_moe.py, peer_lm.py) of scripts/bench-peer*.

The options both peers take (threads, DDP, timing warm-up, logging) and the thread pinning that
follows parsing. It imports no torch, and that is why it is a module of its own beside
peer_common.py (the torch side): OpenBLAS reads its thread count once, when torch loads it, so a
peer parses its arguments and pins the threads with this module before it imports torch.
"""

import argparse
import os


def parser(doc):
    """An ArgumentParser described by the first paragraph of a peer's docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_run_options(ap, warmup_help):
    """The options of how a peer runs: threads or DDP processes, timing warm-up, logging."""
    ap.add_argument("--warmup-steps", type=int, default=20, help=warmup_help)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op (and OpenBLAS) threads; forced to 1 with --ddp")
    ap.add_argument("--ddp", action="store_true",
                    help="DistributedDataParallel over gloo; spawns --nproc processes unless "
                         "launched by torch.distributed.run (RANK/WORLD_SIZE set)")
    ap.add_argument("--nproc", type=int, default=2, help="processes for --ddp (default 2)")
    ap.add_argument("--log-every", type=int, default=0,
                    help="print the loss to stderr every N steps (0: off)")


def parse(ap, argv=None):
    """Parses argv, checks the run options, and pins the threads before torch is imported."""
    a = ap.parse_args(argv)
    if a.ddp:
        a.threads = 1  # one thread per process: the processes are the parallelism
    if a.threads < 1 or a.nproc < 1:
        ap.error("--threads and --nproc must be positive")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)
    return a
