"""The simulator's counters and their Prometheus text, under vLLM's metric names."""

from __future__ import annotations

from bisect import bisect_left

from workersim.kvcache import PrefixCache
from workersim.scheduler import Engine
from workersim.sim_settings import SimConfig

TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "abort")


class SimStats:
    """Request counters of one simulated worker."""

    def __init__(self) -> None:
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.success: dict[str, int] = dict.fromkeys(FINISH_REASONS, 0)
        self.cancelled = 0
        self.errors_injected = 0
        self.streams_dropped = 0
        self.rejected = 0
        self.ttft_buckets = [0] * len(TTFT_BUCKETS)
        self.ttft_sum = 0.0
        self.ttft_count = 0

    def observe_ttft(self, seconds: float) -> None:
        i = bisect_left(TTFT_BUCKETS, seconds)
        if i < len(self.ttft_buckets):
            self.ttft_buckets[i] += 1
        self.ttft_sum += seconds
        self.ttft_count += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "prompt_tokens_total": self.prompt_tokens_total,
            "generation_tokens_total": self.generation_tokens_total,
            "request_success_total": dict(self.success),
            "requests_cancelled_total": self.cancelled,
            "errors_injected_total": self.errors_injected,
            "streams_dropped_total": self.streams_dropped,
            "requests_rejected_total": self.rejected,
        }


def _metric(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, object]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{{{labels}}} {value}")


def render_metrics(config: SimConfig, engine: Engine, cache: PrefixCache, stats: SimStats) -> bytes:
    """Prometheus text exposition (format 0.0.4)."""
    m = 'model_name="{}"'.format(config.model.replace("\\", "\\\\").replace('"', '\\"'))
    lines: list[str] = []
    _metric(lines, "vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
            [(m, engine.running)])
    _metric(lines, "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
            [(m, engine.waiting)])
    usage = cache.usage
    _metric(lines, "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
            [(m, usage)])
    _metric(lines, "vllm:gpu_cache_usage_perc", "gauge", "GPU KV-cache usage (older name).", [(m, usage)])
    _metric(lines, "vllm:prefix_cache_queries_total", "counter",
            "Prefix cache queries, in terms of number of queried tokens.", [(m, cache.queries_total)])
    _metric(lines, "vllm:prefix_cache_hits_total", "counter",
            "Prefix cache hits, in terms of number of cached tokens.", [(m, cache.hits_total)])
    _metric(lines, "vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig.",
            [(f'block_size="{config.block_size}",enable_prefix_caching="True",'
              f'num_gpu_blocks="{config.num_blocks}"', 1)])
    _metric(lines, "vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
            [(m, stats.prompt_tokens_total)])
    _metric(lines, "vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
            [(m, stats.generation_tokens_total)])
    _metric(lines, "vllm:request_success_total", "counter", "Count of successfully processed requests.",
            [(f'finished_reason="{reason}",{m}', count) for reason, count in stats.success.items()])
    name = "vllm:time_to_first_token_seconds"
    lines.append(f"# HELP {name} Histogram of time to first token in seconds.")
    lines.append(f"# TYPE {name} histogram")
    cumulative = 0
    for bound, count in zip(TTFT_BUCKETS, stats.ttft_buckets, strict=True):
        cumulative += count
        lines.append(f'{name}_bucket{{le="{bound}",{m}}} {cumulative}')
    lines.append(f'{name}_bucket{{le="+Inf",{m}}} {stats.ttft_count}')
    lines.append(f"{name}_sum{{{m}}} {stats.ttft_sum}")
    lines.append(f"{name}_count{{{m}}} {stats.ttft_count}")
    _metric(lines, "sim:requests_cancelled_total", "counter",
            "Requests stopped because the client disconnected.", [(m, stats.cancelled)])
    _metric(lines, "sim:errors_injected_total", "counter", "Requests answered 500 by fault injection.",
            [(m, stats.errors_injected)])
    _metric(lines, "sim:streams_dropped_total", "counter", "Streams cut mid-way by fault injection.",
            [(m, stats.streams_dropped)])
    _metric(lines, "sim:kv_cached_blocks", "gauge", "Blocks held by the prefix cache.",
            [(m, cache.cached_blocks)])
    lines.append("")
    return "\n".join(lines).encode()
