"""Run every benchmark module (or those named on the command line).

``python -m bench soak`` runs only the soak (10 minutes per front, standalone then behind
nginx; ``BENCH_SOAK_FRONT=standalone`` for one, ``BENCH_SOAK_SECONDS=180`` for a
shorter one); every module documents its own knobs.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def main(argv: list[str]) -> int:
    names = argv or sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n=== bench.{name} ===", flush=True)
        started = time.perf_counter()
        module.main()
        print(f"(bench.{name} took {time.perf_counter() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
