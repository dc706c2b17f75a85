"""Opt-in GC probe for benchmark children (fleet.py --gc-probe / --gc-whatif).

On PYTHONPATH only when asked for; does nothing unless BENCH_GC_PROBE_DIR is set.
Records every garbage collection's pause (gc.callbacks) and writes a summary to
$BENCH_GC_PROBE_DIR/gc-<pid>.json at exit. BENCH_GC_WHATIF applies a what-if to
botvisor worker processes only: "thr" raises the thresholds to (50000, 20, 100),
"freeze" runs gc.collect() + gc.freeze() BENCH_GC_FREEZE_AFTER seconds (12) after
start, "freeze+thr" both. Project code is not touched.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import threading
import time
from typing import Any

_DIR = os.environ.get("BENCH_GC_PROBE_DIR")


def _install(out_dir: str) -> None:
    started = [0.0]
    pauses: list[tuple[int, float]] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((int(info["generation"]), time.perf_counter() - started[0]))

    gc.callbacks.append(on_gc)
    argv = list(getattr(sys, "orig_argv", sys.argv))
    mode = os.environ.get("BENCH_GC_WHATIF", "none")
    is_worker = "supervisor.worker.process" in argv
    frozen: list[int] = []
    if is_worker and "thr" in mode:
        gc.set_threshold(50_000, 20, 100)
    if is_worker and "freeze" in mode:

        def freeze() -> None:
            time.sleep(float(os.environ.get("BENCH_GC_FREEZE_AFTER", "12")))
            gc.collect()
            gc.freeze()
            frozen.append(gc.get_freeze_count())

        threading.Thread(target=freeze, daemon=True, name="bench-gc-freeze").start()

    def dump() -> None:
        gens: dict[str, dict[str, float]] = {}
        for g in sorted({g for g, _ in pauses}):
            v = sorted(d for gg, d in pauses if gg == g)
            gens[f"gen{g}"] = {
                "n": len(v),
                "total_ms": round(sum(v) * 1000, 1),
                "max_ms": round(v[-1] * 1000, 1),
                "p50_ms": round(v[len(v) // 2] * 1000, 2),
            }
        data = {
            "pid": os.getpid(),
            "argv": argv[1:4],
            "whatif": mode if is_worker else "none",
            "frozen": frozen[0] if frozen else 0,
            "collections": gens,
        }
        with open(os.path.join(out_dir, f"gc-{os.getpid()}.json"), "w") as fh:
            json.dump(data, fh)

    atexit.register(dump)


if _DIR:
    _install(_DIR)
