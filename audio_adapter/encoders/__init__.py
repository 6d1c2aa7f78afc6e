"""The audio encoder's side: Whisper's geometry, the length rule, the trimmed forward."""
