"""A local Stripe-compatible server (Billing Meters' endpoints) for tests and the demo: never imported by the product
at module level.

    from stripefake import StripeTestServer
    app = StripeTestServer(["gateway_input_tokens", "gateway_cached_input_tokens", "gateway_output_tokens"])
"""

from stripefake.stripe_server import StripeTestServer

__all__ = ["StripeTestServer"]
