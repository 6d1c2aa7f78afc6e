"""Evaluation by generation: transcript scores, the MCQA question loop, scoring, results."""
