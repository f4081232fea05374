"""The server's counters and histograms, written in Prometheus' text format for ``/metrics``."""
from __future__ import annotations

import threading

# Seconds; time to first token reaches a few prefills on the CPU.
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
TPOT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2)


class Histogram:
    def __init__(self, buckets):
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value: float) -> None:
        for i, edge in enumerate(self.buckets):
            if value <= edge:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out = [f"# TYPE {name} histogram"]
        out += [f'{name}_bucket{{le="{edge}"}} {n}' for edge, n in zip(self.buckets, self.counts)]
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum}",
                f"{name}_count {self.count}"]
        return out


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests = {}  # finish status -> count
        self.rejected = 0  # 4xx and 429
        self.prompt_tokens = self.completion_tokens = 0
        self.visual_tokens = self.kept_visual_tokens = 0
        self.flops = self.dense_flops = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)

    def finished(self, status: str, result, ttft: float | None, tpot: float | None) -> None:
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            stats = result.stats
            self.prompt_tokens += stats.prompt_tokens
            self.completion_tokens += len(result.token_ids)
            self.visual_tokens += stats.n_visual
            self.kept_visual_tokens += stats.kept_visual[-1] if stats.kept_visual else 0
            self.flops += sum(stats.flops)
            self.dense_flops += sum(stats.dense_flops)
            if ttft is not None:
                self.ttft.observe(ttft)
            if tpot is not None:
                self.tpot.observe(tpot)

    def reject(self) -> None:
        with self._lock:
            self.rejected += 1

    def text(self, queue_depth: int, slots_in_use: int, slots: int) -> str:
        with self._lock:
            kept = self.kept_visual_tokens / self.visual_tokens if self.visual_tokens else 1.0
            saved = 1 - self.flops / self.dense_flops if self.dense_flops else 0.0
            lines = ["# TYPE dyrate_requests_total counter"]
            lines += [f'dyrate_requests_total{{status="{s}"}} {n}'
                      for s, n in sorted(self.requests.items())]
            lines += ["# TYPE dyrate_requests_rejected_total counter",
                      f"dyrate_requests_rejected_total {self.rejected}",
                      "# TYPE dyrate_prompt_tokens_total counter",
                      f"dyrate_prompt_tokens_total {self.prompt_tokens}",
                      "# TYPE dyrate_completion_tokens_total counter",
                      f"dyrate_completion_tokens_total {self.completion_tokens}",
                      "# TYPE dyrate_queue_depth gauge", f"dyrate_queue_depth {queue_depth}",
                      "# TYPE dyrate_slots_in_use gauge", f"dyrate_slots_in_use {slots_in_use}",
                      "# TYPE dyrate_slots gauge", f"dyrate_slots {slots}",
                      "# TYPE dyrate_kept_visual_token_ratio gauge",
                      f"dyrate_kept_visual_token_ratio {kept}",
                      "# TYPE dyrate_flops_saved_ratio gauge", f"dyrate_flops_saved_ratio {saved}"]
            lines += self.ttft.lines("dyrate_time_to_first_token_seconds")
            lines += self.tpot.lines("dyrate_time_per_output_token_seconds")
        return "\n".join(lines) + "\n"
