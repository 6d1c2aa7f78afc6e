"""Samples, WebDataset shards (reader and writer), the dataset, collator and data module."""
