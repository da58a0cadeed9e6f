"""Training throughput between two log lines: iterations per second, time spent waiting for data, peak memory."""
import time

import torch


def timed_batches(loader, waited):
    """The batches of ``loader``; ``waited(seconds)`` is called with the time spent waiting for each."""
    batches = iter(loader)
    while True:
        t = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            return
        waited(time.perf_counter() - t)
        yield batch


class Throughput:
    """Counts the batches a process trains on and the seconds it waits for them.

    ``waited(seconds)`` after each ``next(loader)``, ``stepped()`` after each batch (also one skipped by the NaN
    guard); ``report()`` returns the numbers since the previous report and starts a new window:
    steps_per_s (batches per second of wall time), data_wait_s (mean wait per batch, seconds), data_wait_frac
    (share of the wall time spent waiting), time_s (seconds since the start), peak_mem_gib (CUDA only: peak
    memory allocated by tensors in the window, GiB).
    """

    def __init__(self, device):
        self.device = device
        self.start = time.perf_counter()
        self._new_window()

    def _new_window(self):
        self.t0, self.steps, self.wait = time.perf_counter(), 0, 0.0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def waited(self, seconds):
        self.wait += seconds

    def stepped(self):
        self.steps += 1

    def report(self):
        now = time.perf_counter()
        dt = max(now - self.t0, 1e-9)
        row = {"steps_per_s": self.steps / dt, "data_wait_s": self.wait / max(self.steps, 1),
               "data_wait_frac": self.wait / dt, "time_s": now - self.start}
        if self.device.type == "cuda":
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self._new_window()
        return row
