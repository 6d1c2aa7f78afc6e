"""Backward compatibility only: the names ``scripts/bench_data.py`` still imports from here.

The data pipeline lives in `recipes.dataset` (`AudioShardDataset`), `recipes.loader` (`ShardLoader`),
`recipes.datamodule` (`AudioShardDataModule`), `recipes.resume` (`resume_plan`, `record_stream_position`),
`recipes.collate`, `recipes.samples`, `recipes.shard_reader`, `recipes.shard_writer` and `recipes.skips`;
import from those. Delete this file once ``scripts/bench_data.py`` imports from them.
"""

from audio_adapter.audio_features import to_mono
from recipes.collate import AudioCollator
from recipes.dataset import AudioShardDataset
from recipes.loader import ShardLoader
from recipes.samples import decode_audio, normalize_messages, parse_json_bytes
from recipes.shard_reader import iter_tar_samples

__all__ = [
    "AudioCollator",
    "AudioShardDataset",
    "ShardLoader",
    "decode_audio",
    "iter_tar_samples",
    "normalize_messages",
    "parse_json_bytes",
    "to_mono",
]
