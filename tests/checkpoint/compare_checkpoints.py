#!/usr/bin/python3
"""Compares two daa-swarm checkpoints with h5py alone, for the restart tests.

  compare_checkpoints.py A B [--exclude PATH ...]   every dataset byte-identical (both ways)
  compare_checkpoints.py A B --loss-at STEP --rtol R  the training loss of STEP agrees within R
Exit 0 when they agree; otherwise 1, with one line per difference.
"""
import argparse
import sys

import h5py
import numpy as np

# Written from the clock or the command line, so they differ between any two runs.
ALWAYS_EXCLUDED = ["/meta/created_utc", "/config/input", "/history/steps/samples_per_s"]


def datasets(path):
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__("/" + name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return found


def raw(value):
    return value if isinstance(value, bytes) else np.asarray(value).tobytes()


def compare_all(a, b, excluded):
    left, right = datasets(a), datasets(b)
    problems = []
    for path in sorted(set(left) | set(right)):
        if any(path == e or path.startswith(e.rstrip("/") + "/") for e in excluded):
            continue
        if path not in left or path not in right:
            problems.append(f"{path}: only in {'B' if path not in left else 'A'}")
        elif raw(left[path]) != raw(right[path]):
            problems.append(f"{path}: differs")
    compared = len(set(left) | set(right))
    return problems, compared


def loss_at(path, step):
    with h5py.File(path, "r") as f:
        steps = list(f["/history/steps/step"][()])
        if step not in steps:
            sys.exit(f"compare_checkpoints: {path} has no step {step} in its history")
        return float(f["/history/steps/loss"][steps.index(step)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--exclude", nargs="*", default=[])
    parser.add_argument("--loss-at", type=int)
    parser.add_argument("--rtol", type=float, default=0.0)
    args = parser.parse_args()
    if args.loss_at is not None:
        x, y = loss_at(args.a, args.loss_at), loss_at(args.b, args.loss_at)
        rel = abs(x - y) / abs(x)
        print(f"loss at step {args.loss_at}: {x!r} vs {y!r}, relative difference {rel:.3e}")
        return 0 if rel <= args.rtol else 1
    problems, compared = compare_all(args.a, args.b, ALWAYS_EXCLUDED + args.exclude)
    for p in problems:
        print(p)
    print(f"{compared} datasets compared, {len(problems)} differ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
