"""A local stand-in for hosted LLM providers (an outside-world fake, never imported by the product).

``ProviderFake(shape="openai")`` is a plain OpenAI-compatible Chat Completions server;
``ProviderFake(shape="xai")`` answers like xAI's API: reasoning tokens in
``usage.completion_tokens_details`` counted outside ``completion_tokens`` (total = prompt + completion +
reasoning) and the request's price in ``usage.cost_in_usd_ticks``. Fault switches (``fault``) make it
slow, answer an error status, or cut a stream; tests flip them between requests.
"""

from providerfake.provider_app import Fault, ProviderFake

__all__ = ["Fault", "ProviderFake"]
