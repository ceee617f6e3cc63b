"""The training engine shared by classification, detection and segmentation.

- :mod:`.distributed`: torchrun / DDP set-up and collective helpers that are no-ops in one process.
- :mod:`.run_checkpoints`: atomic checkpoints, keep-last/best, ``--resume auto``, RNG state capture.
- :mod:`.logging`: JSON-lines metrics, progress bars (plain lines when not on a terminal), a logger.
- :mod:`.guards`: stop on a NaN/inf loss with a clear message.
- :mod:`.amp`: the ``--amp`` choices, autocast and the float16 loss scaler.
- :mod:`.config`: dataclass configs from defaults, presets, YAML and command-line overrides.
- :mod:`.samplers`: a distributed sampler whose batches do not depend on the number of processes.
"""
from .run_checkpoints import CheckpointManager, capture_rng_state, restore_rng_state
from .distributed import (
    DistContext,
    all_gather_object,
    all_reduce_sum,
    barrier,
    cleanup,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    unwrap_model,
)
from .guards import check_finite
from .logging import MetricsLogger, get_logger, progress, read_metrics
from .samplers import ChunkedDistributedSampler, EvalDistributedSampler

__all__ = [
    "CheckpointManager",
    "capture_rng_state",
    "restore_rng_state",
    "DistContext",
    "init_distributed",
    "barrier",
    "all_reduce_sum",
    "all_gather_object",
    "cleanup",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "unwrap_model",
    "check_finite",
    "MetricsLogger",
    "get_logger",
    "progress",
    "read_metrics",
    "ChunkedDistributedSampler",
    "EvalDistributedSampler",
]
