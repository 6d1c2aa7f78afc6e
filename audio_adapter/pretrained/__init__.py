"""Real checkpoints: loading pretrained parts, building the offline small parts."""
