"""The lead data contract: the canonical frame and (in `suite`) its Great Expectations suite."""
