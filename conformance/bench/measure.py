"""Timers, the peak-memory probe and the machine's own ceilings (memory bandwidth, exp throughput)."""

from __future__ import annotations

import gc
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from .presets import Repeats

STATUS_FILE = Path("/proc/self/status")
CLEAR_REFS_FILE = Path("/proc/self/clear_refs")


def percentiles(seconds: list[float]) -> dict:
    """Return the median and the 20th and 80th percentiles in milliseconds, and the number of timed calls."""
    values = np.asarray(seconds) * 1e3
    return {
        "median_ms": float(np.percentile(values, 50)),
        "p20_ms": float(np.percentile(values, 20)),
        "p80_ms": float(np.percentile(values, 80)),
        "repeats": len(seconds),
    }


def time_calls(call: Callable[[], object], synchronize: Callable[[object], None], repeats: Repeats) -> tuple[float, dict]:
    """Time call: the first call alone, then warm-up calls, then the timed calls.

    Returns (seconds of the first call, percentiles of the timed calls). Each
    timer stops after synchronize(output), so asynchronous dispatch is counted.
    """
    started = time.perf_counter()
    synchronize(call())
    first = time.perf_counter() - started

    for _ in range(max(0, repeats.warmup - 1)):
        synchronize(call())

    timings: list[float] = []
    budget_end = time.perf_counter() + repeats.seconds
    while len(timings) < repeats.maximum and (len(timings) < repeats.minimum or time.perf_counter() < budget_end):
        started = time.perf_counter()
        output = call()
        synchronize(output)
        timings.append(time.perf_counter() - started)
        del output
    return first, percentiles(timings)


def _status_bytes(field_name: str) -> int:
    for line in STATUS_FILE.read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024  # The kernel reports kB.
    raise KeyError(f"{field_name} not found in {STATUS_FILE}")


class ResidentSetProbe:
    """The process's peak resident set during one call, beyond what was resident before it.

    Linux resets the peak (VmHWM) when "5" is written to /proc/self/clear_refs
    (kernel 4.0 and later, see proc(5)). Memory that an allocator kept after
    an earlier free is not seen again. That includes glibc's heap, which serves
    allocations below its mmap threshold (128 KiB, adjusted up to 32 MiB), so
    the figure is a lower bound, close for the large tensors of the big shapes.
    """

    method = (
        "process peak resident set (Linux VmHWM, reset through /proc/self/clear_refs) during the call, "
        "minus the resident set before it, plus the inputs' size; a lower bound, because memory that "
        "the allocator kept from earlier calls (glibc's heap below its mmap threshold of 128 KiB to 32 MiB) is not seen"
    )

    @staticmethod
    def unavailable_reason() -> str | None:
        if not STATUS_FILE.exists() or not os.access(CLEAR_REFS_FILE, os.W_OK):
            return f"{CLEAR_REFS_FILE} is not writable here, so the peak resident set cannot be reset (Linux only)"
        return None

    def measure(self, call: Callable[[], object], synchronize: Callable[[object], None]) -> int:
        gc.collect()
        CLEAR_REFS_FILE.write_text("5")
        before = _status_bytes("VmRSS")
        output = call()
        synchronize(output)
        peak = _status_bytes("VmHWM")
        del output
        gc.collect()
        return max(0, peak - before)


class DeviceProbe:
    """The peak of an accelerator's allocator during one call, from the framework's own statistics."""

    def __init__(self, method: str, reset: Callable[[], None], read: Callable[[], int]):
        self.method = method
        self._reset = reset
        self._read = read

    @staticmethod
    def unavailable_reason() -> str | None:
        return None

    def measure(self, call: Callable[[], object], synchronize: Callable[[object], None]) -> int:
        gc.collect()
        self._reset()
        output = call()
        synchronize(output)
        peak = self._read()
        del output
        return int(peak)


def _copy_rates(source: np.ndarray, target: np.ndarray, threads: int, repeats: int) -> list[float]:
    """Time ``repeats`` copies of source into target, split into one slice per thread, in GB/s of read plus write."""
    bounds = np.linspace(0, source.size, threads + 1).astype(int)
    slices = [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]
    rates = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in range(repeats):
            started = time.perf_counter()
            # np.copyto releases the GIL, so the slices are copied in parallel.
            list(pool.map(lambda part: np.copyto(target[part], source[part]), slices))
            rates.append(2 * source.nbytes / (time.perf_counter() - started) / 1e9)
    return rates


def copy_bandwidth(gibibytes: float = 1.0, repeats: int = 5) -> dict:
    """Measure memory bandwidth with a NumPy copy of ``gibibytes`` GiB, counting read plus write bytes as STREAM does.

    The copy runs on one thread per core, as the frameworks do, and on one
    thread for reference. Returns the best and the median rate over
    ``repeats`` copies, in GB/s (10^9 bytes). Write-allocate traffic is not
    counted, as in STREAM's Copy.
    """
    threads = os.cpu_count() or 1
    elements = int(gibibytes * 2**30) // 8
    source = np.ones(elements)
    target = np.empty_like(source)
    np.copyto(target, source)  # Touch every page of the target before timing.
    rates = _copy_rates(source, target, threads, repeats)
    single = _copy_rates(source, target, 1, repeats)
    del source, target
    return {
        "copy_bytes": elements * 8,
        "threads": threads,
        "best_gb_per_s": float(max(rates)),
        "median_gb_per_s": float(np.median(rates)),
        "one_thread_best_gb_per_s": float(max(single)),
        "repeats": repeats,
        "method": f"np.copyto of a {gibibytes:g} GiB float64 array in {threads} slices on {threads} threads, "
        "read plus write bytes (STREAM Copy)",
    }


def exp_throughput(elements: int = 16384, seconds: float = 0.5) -> dict:
    """Measure np.exp on a cache-resident float32 array, in exponentials per second for one thread."""
    values = np.linspace(-10.0, 10.0, elements, dtype=np.float32)
    output = np.empty_like(values)
    np.exp(values, out=output)
    calls = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            np.exp(values, out=output)
        calls += 100
    elapsed = time.perf_counter() - started
    return {
        "per_thread_per_s": calls * elements / elapsed,
        "elements": elements,
        "method": f"np.exp(out=) on {elements} float32 values ({elements * 4 // 1024} KiB, cache-resident), one thread",
    }
