"""The long-form study's settings (`scripts.longform`'s options), read by every step."""

from __future__ import annotations

from dataclasses import dataclass, field

from recipes.longform.task import ITEMS_PER_WINDOW, LONGFORM_MODEL, TOKENS_PER_ITEM


@dataclass
class LongformConfig:
    out_dir: str = "runs/longform"
    pool_clips: int = 1500
    standin_clips: int = 1000
    standin_steps: int = 400
    standin_batch: int = 16
    eval_items: tuple[int, ...] = (16, 32, 64, 128)
    eval_n: int = 200
    steps: int = 2000  # vanilla: 100 % training accuracy long before this
    vlat_steps: int = 3000  # VLAT learns the local-order question more slowly
    batch_size: int = 32
    vanilla_seeds: tuple[int, ...] = (0, 1)
    vlat_seeds: tuple[int, ...] = (0, 1)
    vlat_strategy: str = "limited"
    # a VLAT variant (not the paper's): half the samples keep raw positions, so dense spacing is seen too
    vlat_mix_seeds: tuple[int, ...] = (0,)
    vlat_raw_share: float = 0.5
    partial_yarn_cutoff: int = 4
    sweep_cutoffs: tuple[int, ...] = (0, 2, 4, 5, 6, 8, 16)
    sweep_temperatures: tuple[float, ...] = (0.8, 1.0, 1.3)
    threads: int = 2
    model: dict = field(default_factory=lambda: dict(LONGFORM_MODEL))

    @classmethod
    def quick(cls, **kwargs) -> LongformConfig:
        return cls(
            pool_clips=16,
            standin_clips=16,
            standin_steps=2,
            eval_items=(16, 32),
            eval_n=2,
            steps=3,
            vlat_steps=3,
            batch_size=4,
            vanilla_seeds=(0,),
            vlat_seeds=(0,),
            vlat_mix_seeds=(0,),
            sweep_cutoffs=(0, 4),
            sweep_temperatures=(1.0,),
            threads=1,
            **kwargs,
        )  # smoke-scale tensors: one thread avoids the synchronisation cost

    @property
    def base_tokens(self) -> int:
        return ITEMS_PER_WINDOW * TOKENS_PER_ITEM
