"""A vLLM-compatible worker simulator: honest prefix KV cache, timing model and fault injection, no GPU.

    from gateway.sim import SimConfig, start_sim_server
    sim = await start_sim_server(SimConfig(time_scale=0))
    ...  # talk to sim.url; inspect sim.app.cache, sim.app.stats, sim.app.recent_requests
    await sim.stop()
"""

from gateway.sim.config import SimConfig
from gateway.sim.run import RunningSim, SimProcess, serve_sim, start_sim_process, start_sim_server
from gateway.sim.server import TOKENIZER_DIR, SimApp, create_sim_app

__all__ = [
    "TOKENIZER_DIR",
    "RunningSim",
    "SimApp",
    "SimConfig",
    "SimProcess",
    "create_sim_app",
    "serve_sim",
    "start_sim_process",
    "start_sim_server",
]
