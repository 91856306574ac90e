"""``vlm-r1 demo``: build a tiny real VLM and ground one referring expression end to end.

This is the smallest complete path through vlm-r1: synthetic data -> a tiny Qwen2.5-VL built
locally -> chat-templated prompt with the image -> generation -> answer parsing -> boxes mapped
from the model's coordinate system back to the image -> the REC reward. The model is untrained,
so its box is noise; what the demo shows is that every piece is wired to real components.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from vlm_r1.data.jsonl import load_sample_images, read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models import load_model
from vlm_r1.models.tiny import tiny_checkpoint
from vlm_r1.rewards import call_reward, resolve_reward


def run_demo(
    out: Path | None = None, family: str = "qwen2_5_vl", seed: int = 0
) -> dict[str, float]:
    console = Console()
    out = Path(out or tempfile.mkdtemp(prefix="vlm-r1-demo-"))
    with console.status("building a tiny checkpoint and a shapes dataset..."):
        path = tiny_checkpoint(family, "demo", seed)
        files = write_shapes(out / "shapes", n_train=0, n_eval=1, seed=seed, tasks=["rec"])
        adapter, model, processor = load_model(path)
    sample = next(iter(read_samples(str(files["rec_eval_in"]))))
    images = load_sample_images(sample)
    batch = adapter.prepare_inputs(processor, [images], [adapter.rec_prompt(sample.question)])
    torch.manual_seed(seed)
    with torch.no_grad():
        generated = model.generate(**batch, do_sample=False, max_new_tokens=48)
    completion = processor.batch_decode(
        generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )[0]
    space = adapter.box_space(processor, images[0].size)
    gt_model = adapter.boxes_to_model(processor, images[0].size, sample.solution.boxes)[0]
    reward = call_reward(
        resolve_reward("rec_iou"), [completion], [sample.solution], box_spaces=[space]
    )
    table = Table(
        title=f"vlm-r1 demo: {family} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, untrained)"
    )
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("checkpoint", str(path))
    table.add_row("image", f"{sample.images[0]} ({images[0].width}x{images[0].height})")
    table.add_row("question", sample.question)
    table.add_row("prompt tokens", str(batch["input_ids"].shape[1]))
    table.add_row("box system", f"{space.system}, model input {space.model_size or images[0].size}")
    table.add_row("ground truth (pixels)", str(list(sample.solution.boxes[0])))
    table.add_row("ground truth (model units)", str([int(v) for v in gt_model]))
    table.add_row("completion", repr(completion[:200]))
    table.add_row("parse status", str(reward.details[0].get("status")))
    table.add_row("rec_iou reward", f"{reward.scores[0]:.3f}")
    console.print(table)
    return {"rec_iou": reward.scores[0]}
