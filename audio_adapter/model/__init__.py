"""The audio model over a stock VLM: config fields, audio mixin, projector, rotary, hooks."""
