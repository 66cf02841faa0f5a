"""The scaffold the curvature benchmarks share (``bench_curvature_models.py``,
``bench_curvature_peers.py``): one fresh process per timed job, interleaved rounds, medians.

A *job* is a tuple of strings naming what one worker process times (``(model, library,
quantity)``, ``(library, quantity)``); the benchmark's script is started as
``script --worker *job *extra``, builds the call, runs it once untimed, then times it
``repeats`` times and prints one JSON line (:func:`report`): ``{"wall": [...], "cpu":
[...]}`` seconds per call, or ``{"unsupported": reason}`` when the library does not cover
the case. :func:`run_rounds` starts the workers — round ``r`` runs every job once, in an
order rotated by ``r``, so the load of other processes hits all alike — on one BLAS/OpenMP
thread, and returns per job the median over rounds of the per-process medians, by CPU time
(``time.process_time``: robust when other processes load the machine) and by wall time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["report", "run_rounds", "single_thread_env", "time_call"]

Job = tuple[str, ...]


def single_thread_env() -> dict[str, str]:
    """The environment with every thread pool at one thread (OpenBLAS, MKL, OpenMP)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def time_call(call: Callable[[], Any], repeats: int, warm_up: bool = True) -> dict[str, list]:
    """``call`` once untimed (the warm-up) unless ``warm_up`` is false, then ``repeats``
    times: seconds per call."""
    if warm_up:
        call()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return {"wall": wall, "cpu": cpu}


def report(build: Callable[[], Callable[[], Any]], repeats: int) -> None:
    """The worker's side: build the call and time it (:func:`time_call`), one JSON line on
    stdout; an exception while building or warming up is ``{"unsupported": reason}`` (a
    library without this case is listed "—", not fatal)."""
    import torch

    torch.set_num_threads(1)
    try:
        call = build()
        call()  # the warm-up, untimed: does the library cover the case?
    except Exception as e:
        print(json.dumps({"unsupported": f"{type(e).__name__}: {e}"[:200]}))
        return
    print(json.dumps(time_call(call, repeats, warm_up=False)))


def run_rounds(
    script: str, jobs: Sequence[Job], rounds: int, extra: Sequence[str] = ()
) -> dict[Job, dict[str, float] | None]:
    """Run every job ``rounds`` times, each in its own process (``script --worker *job
    *extra``), interleaved; per job ``{"wall": median, "cpu": median}`` of the per-process
    medians, or None when the worker said the case is not covered (asked once)."""
    env = single_thread_env()
    runs: dict[Job, dict[str, list[float]] | None] = {j: {"wall": [], "cpu": []} for j in jobs}
    for r in range(rounds):
        shift = r % len(jobs) if jobs else 0
        for job in [*jobs[shift:], *jobs[:shift]]:
            if runs[job] is None:
                continue
            command = [sys.executable, script, "--worker", *job, *extra]
            out = subprocess.run(command, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{job} failed:\n{out.stderr[-2000:]}")
            result = json.loads(out.stdout.splitlines()[-1])
            if "unsupported" in result:
                print(f"{job}: not covered ({result['unsupported']})", file=sys.stderr)
                runs[job] = None
                continue
            for kind in ("wall", "cpu"):
                runs[job][kind].append(statistics.median(result[kind]))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    return {
        job: None if run is None else {k: statistics.median(ts) for k, ts in run.items()}
        for job, run in runs.items()
    }
