"""Working memory of one tile: peak RSS of a fresh process that runs a single tile window, per model and tile.

Prints the extra memory inference needs per padded tile pixel (what `WORK_BYTES_PER_PIXEL` in
gpu_batch/engine/engine.py budgets with) and the largest input each tile size handles in a memory budget:
peak = model + tile work + output buffer (3 bytes per output pixel, 16x the input) + ~2 output-sized
copies while resizing/encoding.

    .venv/bin/python benchmarks/engine_memory.py [--tiles 64 128 256] [--models x4plus animevideov3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

PROBE = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from benchmarks.engine_speed import peak_rss_mib
from gpu_batch.engine.runtime import load_runner
runner = load_runner({model!r}, "cpu")
loaded = peak_rss_mib()
runner.run(np.random.default_rng(0).random((1, 3, {window}, {window}), dtype=np.float32))
print(loaded, peak_rss_mib())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", nargs="*", type=int, default=[64, 128, 256])
    parser.add_argument("--models", nargs="*", default=["x4plus", "animevideov3"])
    args = parser.parse_args()

    from gpu_batch.engine import Engine

    engine = Engine(device="cpu")
    print(f"{'model':13} {'tile':>5} {'window':>7} {'loaded MiB':>11} {'peak MiB':>9} {'tile work MiB':>14} "
          f"{'bytes/window px':>16}")
    for model in args.models:
        pad = engine.tile_pad(model)
        for tile in args.tiles:
            window = tile + 2 * pad
            code = PROBE.format(root=os.getcwd(), model=model, window=window)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            loaded, peak = (int(v) for v in out.stdout.split())
            work = peak - loaded
            print(f"{model:13} {tile:5d} {window:7d} {loaded:11d} {peak:9d} {work:14d} "
                  f"{work * 2**20 / window**2:16.0f}", flush=True)


if __name__ == "__main__":
    main()
