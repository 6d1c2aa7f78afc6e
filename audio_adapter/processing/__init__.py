"""Processor, tokenizer, audio placeholders and the log-mel front end."""
