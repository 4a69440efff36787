"""A vLLM-compatible worker simulator: honest prefix KV cache, timing model and fault injection, no GPU.

    from workersim import SimConfig, start_sim_server
    sim = await start_sim_server(SimConfig(time_scale=0))
    ...  # talk to sim.url; inspect sim.app.cache, sim.app.stats, sim.app.recent_requests
    await sim.stop()
"""

from workersim.run import RunningSim, SimProcess, serve_sim, start_sim_process, start_sim_server
from workersim.sim_app import TOKENIZER_DIR, SimApp, create_sim_app
from workersim.sim_settings import SimConfig

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
