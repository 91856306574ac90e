"""Sharded checkpoints are verified per engine, and DeepSpeed's pickled files are checked for
foreign classes before DeepSpeed unpickles them (a checkpoint must never run code)."""

import json
from pathlib import Path

import pytest
import torch

from vlm_r1 import checkpoint as ckpt
from vlm_r1.distributed.parallelism import check_deepspeed_files


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def deepspeed_folder(root: Path) -> Path:
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    folder = root / "deepspeed" / ckpt.DEEPSPEED_TAG
    folder.mkdir(parents=True)
    torch.save(
        {"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.gradients, "w": torch.ones(2)},
        folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt",
    )
    return folder


def test_deepspeed_files_with_only_known_classes_pass(tmp_path):
    check_deepspeed_files(deepspeed_folder(tmp_path))


def test_a_pickle_payload_in_a_deepspeed_file_is_refused_and_does_not_run(tmp_path):
    folder = deepspeed_folder(tmp_path)
    marker = tmp_path / "marker"
    torch.save({"x": _Payload(str(marker))}, folder / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    with pytest.raises(ckpt.CheckpointError, match="rank_1"):
        check_deepspeed_files(folder)
    assert not marker.exists()


def test_an_empty_deepspeed_folder_is_an_error(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no DeepSpeed checkpoint files"):
        check_deepspeed_files(tmp_path)


def sharded_checkpoint(root: Path, engine: str) -> Path:
    path = root / "checkpoint-000002"
    (path / "model").mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"w": torch.ones(4)}, path / "model" / "model.safetensors")
    ckpt.write_rank_state(path, 0)
    (path / ckpt.STATE_FILE).write_text(json.dumps({"step": 2, "launch": {"engine": engine}}))
    return path


def test_verify_reads_the_layout_of_each_engine(tmp_path):
    fsdp = sharded_checkpoint(tmp_path / "fsdp", "fsdp2")
    torch.save({}, fsdp / "scheduler.pt")
    with pytest.raises(ckpt.CheckpointError, match="optimizer/.metadata"):
        ckpt.verify(fsdp)
    (fsdp / "optimizer").mkdir()
    (fsdp / "optimizer" / ".metadata").write_bytes(b"x")
    ckpt.verify(fsdp)

    zero = sharded_checkpoint(tmp_path / "zero", "deepspeed")
    with pytest.raises(ckpt.CheckpointError, match="no ZeRO optimizer states"):
        ckpt.verify(zero)
    shard = deepspeed_folder(zero) / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    ckpt.verify(zero)
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated
    with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt"):
        ckpt.verify(zero)
