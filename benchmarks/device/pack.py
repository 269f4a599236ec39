"""Pack an image tree into one file (raw bytes + a JSON index), and unpack it again.

A lent GPU machine receives only the checkout (64 MiB in all): CIFAR-10's 60,000 JPEG files hold
~55 MB of bytes, which one packed file carries without per-file overhead.

    python benchmarks/device/pack.py pack ../shared/data/cifar10-jpeg .device/cifar10.pack
    python benchmarks/device/pack.py unpack .device/cifar10.pack /tmp/cifar10-jpeg
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path


def pack(src: str, out: str) -> None:
    root = Path(src)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    index, blobs, offset = [], [], 0
    for p in files:
        data = p.read_bytes()
        index.append([str(p.relative_to(root)), offset, len(data)])
        blobs.append(data)
        offset += len(data)
    header = json.dumps(index).encode()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for b in blobs:
            f.write(b)
    print(f"packed {len(files)} files, {offset / 1e6:.1f} MB -> {out}")


def unpack(pack_file: str, dest: str) -> None:
    with open(pack_file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        index = json.loads(f.read(n))
        body = f.read()
    root = Path(dest)
    for rel, offset, size in index:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body[offset : offset + size])
    print(f"unpacked {len(index)} files -> {dest}")


if __name__ == "__main__":
    cmd, a, b = sys.argv[1:4]
    {"pack": pack, "unpack": unpack}[cmd](a, b)
