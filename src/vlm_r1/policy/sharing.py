"""Which of the shared-work paths a training run can take (``speed.*``), and why not.

Both paths give the numbers of the plain path (tests prove it per family); what limits them is
the distributed wrapper or the memory setting, so the decision is made once, at start-up, and
said in the log when a requested path steps aside.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vlm_r1.config import SpeedConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SharingPlan:
    share_image_features: bool
    """Training forwards encode each prompt's images once and hand the features to its rows."""
    share_prompt_prefix: bool
    """Training forwards run each prompt once per micro-batch, the completions from its cache."""


def sharing_plan(
    speed: SpeedConfig,
    num_processes: int,
    vision_trains: bool,
    gradient_checkpointing: bool,
    shards_parameters: bool = False,
) -> SharingPlan:
    """The paths ``speed`` asks for, minus those this run cannot take.

    * A training vision tower under multi-process DDP gets its gradients all-reduced only for
      parameters used inside the wrapped forward; encoding outside it would leave them
      unsynchronised, so that case keeps the repeated-image path.
    * Under FSDP2 and ZeRO-3 the vision tower's parameters are sharded and gathered only
      around the wrapped model's own forward; encoding outside it would read shards.
    * A cached prefix takes two forward calls per micro-batch, which DDP/FSDP/DeepSpeed
      wrappers do not allow before one backward; and checkpointed layers return no KV cache in
      training mode. Those runs keep one forward over whole sequences.
    """
    share_features = speed.share_image_features
    if share_features and shards_parameters:
        logger.info(
            "speed.share_image_features: parameters are sharded (FSDP2/ZeRO-3), so images are "
            "encoded inside each forward"
        )
        share_features = False
    if share_features and vision_trains and num_processes > 1:
        logger.info(
            "speed.share_image_features: the vision tower trains on %d processes, so images "
            "are encoded per completion; freeze it (model.freeze_vision=true) to share them",
            num_processes,
        )
        share_features = False
    share_prefix = speed.share_prompt_prefix
    if share_prefix and num_processes > 1:
        logger.info(
            "speed.share_prompt_prefix applies to single-process runs; with %d processes "
            "each completion's forward includes its prompt",
            num_processes,
        )
        share_prefix = False
    if share_prefix and gradient_checkpointing:
        logger.info("speed.share_prompt_prefix is off with model.gradient_checkpointing")
        share_prefix = False
    return SharingPlan(share_features, share_prefix)
