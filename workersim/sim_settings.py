"""The simulator's settings: one typed object, validated once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SimConfig:
    """How a simulated vLLM worker behaves.

    Timing (all multiplied by ``time_scale``; 0 means never sleep): time to first token is queueing +
    ``prefill_overhead_s`` + uncached prompt tokens / ``prefill_tokens_per_s`` (prefills of concurrent
    requests share that throughput, one after the other) + ``slow_start_s``; then each further output token
    takes 1 / ``decode_tokens_per_s``, stretched by ``itl_load_factor`` x running / max_running.
    """

    model: str = "grok-code-fast-1"
    kv_capacity_tokens: int = 262_144
    block_size: int = 16
    max_model_len: int = 131_072
    prefill_tokens_per_s: float = 20_000.0
    decode_tokens_per_s: float = 200.0
    prefill_overhead_s: float = 0.0
    itl_load_factor: float = 0.0
    max_running: int = 64
    max_tokens_default: int = 16
    reasoning: bool = False
    reasoning_tokens: int = 8
    tool_call_rate: float = 0.5
    """With tools and tool_choice "auto": the share of turns that call a tool (halved per tool round)."""
    parallel_tool_call_rate: float = 0.25
    """Of the turns that call a tool, the share that call two at once (unless parallel_tool_calls is false)."""
    error_rate: float = 0.0
    drop_rate: float = 0.0
    slow_start_s: float = 0.0
    time_scale: float = 1.0
    seed: int = 0
    worker_id: str = "sim-0"
    recent_requests_max: int = 256
    stream_interval_s: float = 0.002
    """Streamed tokens closer together than this are sent in one write (like vLLM's stream interval)."""

    def __post_init__(self) -> None:
        problems = []
        if self.block_size < 1:
            problems.append("block_size must be >= 1")
        if self.kv_capacity_tokens < self.block_size:
            problems.append("kv_capacity_tokens must hold at least one block")
        if self.prefill_tokens_per_s <= 0 or self.decode_tokens_per_s <= 0:
            problems.append("prefill_tokens_per_s and decode_tokens_per_s must be > 0")
        if self.max_running < 1:
            problems.append("max_running must be >= 1")
        if self.max_tokens_default < 1 or self.max_model_len < 1:
            problems.append("max_tokens_default and max_model_len must be >= 1")
        if self.reasoning_tokens < 0:
            problems.append("reasoning_tokens must be >= 0")
        if not (0.0 <= self.error_rate <= 1.0 and 0.0 <= self.drop_rate <= 1.0):
            problems.append("error_rate and drop_rate must be within [0, 1]")
        if not (0.0 <= self.tool_call_rate <= 1.0 and 0.0 <= self.parallel_tool_call_rate <= 1.0):
            problems.append("tool_call_rate and parallel_tool_call_rate must be within [0, 1]")
        if self.time_scale < 0 or self.slow_start_s < 0 or self.prefill_overhead_s < 0:
            problems.append("time_scale, slow_start_s and prefill_overhead_s must be >= 0")
        if self.itl_load_factor < 0 or self.stream_interval_s < 0:
            problems.append("itl_load_factor and stream_interval_s must be >= 0")
        if self.recent_requests_max < 0:
            problems.append("recent_requests_max must be >= 0")
        if problems:
            raise ValueError("invalid SimConfig: " + "; ".join(problems))

    @property
    def num_blocks(self) -> int:
        """KV cache capacity in blocks (vLLM's ``num_gpu_blocks``)."""
        return self.kv_capacity_tokens // self.block_size
