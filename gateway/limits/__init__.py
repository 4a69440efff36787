"""Per-key and per-organisation rate limits: token buckets and concurrency leases in shared state,
checked and reserved in the request's single pre-request round trip (see ``stage.RateLimitStage``)."""
