#!/usr/bin/env bash
# Makes a deterministic build context for the context-hashing benchmark (BENCHMARKS.md):
# FILES files in 100 directories, FILES-100 small ones of 1-8 KiB and 100 of BIG_MIB MiB.
# Usage: testdata/mkcontext.sh DIR [FILES] [BIG_MIB]   (default 20000 files, ~500 MB)
set -euo pipefail
dir=${1:?usage: mkcontext.sh DIR [FILES] [BIG_MIB]}
files=${2:-20000}
big_mib=${3:-4}
mkdir -p "$dir"
python3 - "$dir" "$files" "$big_mib" <<'PY'
import os, random, sys
root, files, big_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(42)
for i in range(files):
    d = os.path.join(root, f"pkg{i % 100:03d}", f"mod{(i // 100) % 10}")
    os.makedirs(d, exist_ok=True)
    size = big_mib << 20 if i < 100 else rng.randint(1024, 8192)
    with open(os.path.join(d, f"file{i:05d}.dat"), "wb") as f:
        f.write(rng.randbytes(size))
PY
