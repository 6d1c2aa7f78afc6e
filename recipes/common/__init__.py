"""Shared by every stage: atomic writes, the job journal, setting checks, progress lines."""
