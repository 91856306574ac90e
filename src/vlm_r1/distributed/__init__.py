"""How a run is spread over processes: which engine the user asked for, and the one object
(``Parallelism``) through which the recipes back-propagate, step, generate, hold a reference
model and write/read checkpoints under that engine.

Three engines, each proven against a one-process run in ``tests/integration/test_scale_out.py``:

* ``replicated``: one process, or plain data parallel (DDP through accelerate);
* ``fsdp2``: PyTorch's ``fully_shard`` per transformer block, applied by vlm-r1 itself (the
  same code on CPU and GPU; accelerate's FSDP plugin does not shard on a CPU);
* ``deepspeed``: ZeRO stage 2 or 3 through accelerate's DeepSpeed plugin.
"""

from vlm_r1.distributed.launch import EngineRequest, compute_precision, requested_engine
from vlm_r1.distributed.parallelism import Parallelism, make_parallelism

__all__ = [
    "EngineRequest",
    "Parallelism",
    "compute_precision",
    "make_parallelism",
    "requested_engine",
]
