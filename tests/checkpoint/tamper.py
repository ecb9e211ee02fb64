#!/usr/bin/python3
"""Damages checkpoints in the ways the corruption tests need, with h5py alone.

  tamper.py flip FILE DATASET      flips one byte in the middle of DATASET's stored data, in place
  tamper.py version FILE N         rewrites /meta/format_version as N (with a matching crc32)
  tamper.py foreign FILE           writes an HDF5 file that is not a daa-swarm checkpoint
"""
import sys
import zlib

import h5py
import numpy as np


def flip(path, dataset):
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        offset = ds.id.get_offset()
        size = ds.id.get_storage_size()
    if offset is None or size == 0:
        sys.exit(f"tamper: {dataset} has no contiguous storage in {path}")
    with open(path, "r+b") as f:
        f.seek(offset + size // 2)
        byte = f.read(1)[0]
        f.seek(offset + size // 2)
        f.write(bytes([byte ^ 0x40]))


def version(path, number):
    with h5py.File(path, "r+") as f:
        ds = f["/meta/format_version"]
        ds[()] = np.int64(number)
        ds.attrs["crc32"] = np.uint32(zlib.crc32(np.int64(number).tobytes()))


def foreign(path):
    with h5py.File(path, "w") as f:
        f["/data"] = np.arange(10, dtype=np.float32)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    command, path, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if command == "flip" and len(rest) == 1:
        flip(path, rest[0])
    elif command == "version" and len(rest) == 1:
        version(path, int(rest[0]))
    elif command == "foreign" and not rest:
        foreign(path)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
