"""The offline CPU demo's parts: the stand-in encoder and the demo's report."""
