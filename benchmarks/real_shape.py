"""One GRPO step at Qwen2.5-VL-3B's real widths: vlm-r1 vs TRL's GRPOTrainer, per phase.

    python benchmarks/real_shape.py                 # ~13 minutes on an idle 2-core CPU
    python benchmarks/real_shape.py --max-completion 256   # the issue's length: ~20 minutes
    python benchmarks/real_shape.py --smoke         # tiny widths, 8 tokens: 1-2 minutes

The model. A Qwen2.5-VL built here (no hub access) with Qwen/Qwen2.5-VL-3B-Instruct's
config.json values except the depth: text hidden 2048, 16 attention heads / 2 KV heads,
intermediate 11008, vocab_size 151,936, tie_word_embeddings true, SiLU, rms_norm_eps 1e-6,
rope_theta 1e6 with mrope_section [16, 24, 24], max_position_embeddings 128,000, no sliding
window; vision tower hidden 1280, 16 heads, intermediate 3420, patch 14, temporal patch 2,
spatial merge 2, out_hidden_size 2048, window_size 112, tokens_per_second 2; but 2 text layers
and 2 vision layers (the 3B has 36 and 32). The 3B's full-attention vision blocks are 7, 15,
23, 31 (each eighth block, the last included); here block 1 of 2 is full attention, block 0
windowed. Source: the 3B's config.json as published on the Hugging Face hub, read in copies of
it in public code (the project's reference search), field names as transformers'
``Qwen2_5_VLConfig``. 543M parameters, 311M of them the tied 151,936 x 2048 embedding / LM
head: at this depth the vocabulary projection dominates, which is the point (its cost and
memory do not shrink with depth). Built like the tiny checkpoints (``vlm_r1.models.tiny``):
real config and processor classes, random weights, the locally trained tokenizer (~600 tokens;
the embedding rows above it exist and cost what they cost, and the random model samples them,
decoding to nothing), ``save_pretrained`` in fp32 (2.1 GB) in a temporary folder removed at
the end.

The step, same settings on both sides: 2 shapes REC prompts x G=4 with 448x448 images (256
image tokens, prompts of ~365 tokens), exactly ``--max-completion`` new tokens per completion,
beta 0.04 (a frozen reference model), loss "grpo", num_iterations 1 (no old-policy pass on
either side), micro-batches of 4 completions (2 per step), lr 1e-6, max_grad_norm 1, AdamW,
gradient checkpointing off on both sides, fp32 on CPU. fp32 because this CPU has no
AVX-512/AMX bf16 instructions: bf16 matmuls would be emulated, slower than fp32. EOS is held
off with ``min_new_tokens`` on both sides (transformers' own logits processor), so both score
the same number of tokens; sampling is otherwise plain (temperature 1, no top-p/top-k). vlm-r1
runs with its default speed settings (``SpeedConfig()``: shared-prefill generation, each image
encoded once per step, each prompt run once per micro-batch) and its default rollout backend;
TRL runs ``GRPOTrainer`` as it comes, with ``use_cpu=True``, ``bf16=False``,
``per_device_train_batch_size=4``, ``gradient_accumulation_steps=2`` and so its default
``steps_per_generation`` = 2: the 8 completions are generated once per optimizer step. Neither
writes a checkpoint (vlm-r1's end-of-run save is switched off, TRL ``save_strategy="no"``).

Completion length: 128 by default, not the issue's 256. At this width one decoding step of 8
rows costs ~0.85 s on 2 cores (the LM head alone reads 1.2 GB), so 256 tokens put generation
alone at ~4 minutes per side and the whole benchmark at ~20 minutes, over its 15-minute
budget; nothing else here is worth cutting (the log-prob passes are the next biggest part).
``--max-completion 256`` runs the issue's setting.

Phases (seconds), from timers wrapped around methods in each child process:

- generation: vlm-r1 ``GRPOTrainer.rollout`` (read images, processor, ``generate``, decode);
  TRL ``_generate`` (processor, ``generate``, decode).
- rewards & other: vlm-r1 ``sample_groups`` minus the rollout (reward scoring); TRL
  ``_generate_and_score_completions`` minus generation and log-probs (rewards, advantages, its
  second processor pass for the forward inputs) plus fetching the batch from its dataloader.
- ref log-probs: vlm-r1 ``collect`` after ``sample_groups`` (advantages, the reference's image
  encoding, reference log-probs, no grad); TRL the ``_get_per_token_logps_and_entropies`` calls
  made inside ``_generate_and_score_completions`` (the reference only).
- update: forward + backward of both micro-batches, gradient clipping, optimizer step: vlm-r1
  ``GRPOTrainer.update``; TRL the rest of its optimizer step (``on_step_begin`` to
  ``on_step_end``, minus the above).
- step: their sum. vlm-r1's own ``step_seconds`` metric (the same span) is printed beside it.

Then the log-prob pass alone, each path in its own process: N=2 rows (``--logprob-rows``;
4 doubles this part and puts the benchmark over 15 minutes) of one REC prompt (with its image) + ``--logprob-tokens`` (1,024) random completion tokens, model in train mode,
forward + backward of the mean log-prob. "chunked" is vlm-r1's ``completion_logprobs``, which
runs the LM head and log-softmax ``chunk_tokens`` tokens at a time when it has that keyword
(the table says which); "plain" is ``token_logprobs(model(..., logits_to_keep=T+1).logits[:,
:-1], ids)``, the old path, which holds ``[N, T, V]`` float32 logits (1.2 GB at N=2, T=1,024) and
temporaries of that size. "RSS before" is the RSS with the model loaded and its weights paged
in, before the pass (peak minus it: the pass's own memory, parameter gradients included); "sum
logp" should agree between the two paths.

Output: the tables, then the last line ``memory_vs_trl=<x> speedup_vs_trl=<y>`` with x = vlm-r1
peak RSS / TRL peak RSS of the GRPO step and y = TRL seconds per step / vlm-r1 seconds per step.
Peak RSS is each child's ``ru_maxrss``; the parent imports neither torch nor transformers, so
the floor it sets for its children's figure is a few tens of MB.

Fairness notes. Same model files, prompts, settings and completion token counts on both sides;
one step each, so both pay their first-call warm-up. TRL's fused log-prob head runs the LM head
over every position (prompt included) when not on CUDA/XPU, by its design: that is its CPU
behaviour and is measured as is. A plain path that fails (e.g. killed for memory) is reported
as failed; the GRPO numbers do not depend on it.

Optimizers are each side's default AdamW (same betas, eps, no weight decay): vlm-r1
``torch.optim.AdamW`` (its per-parameter loop on CPU: temporaries the size of the largest
parameter, the 311M-parameter embedding), TRL ``adamw_torch_fused`` (transformers' default).

Time, default length: estimated ~15 minutes on an idle 2-core machine (building the model
~0.5 minute, vlm-r1's step ~4, TRL's ~6, the two log-prob passes ~2.5 each, start-up and
loading ~1); one run on a 2-core machine shared with other jobs (load 4-7) took 43 minutes.
The last lines give the wall time and the CPU seconds the children used (about twice the wall
time of an idle 2-core run). ``--smoke`` runs every path with tiny widths (text 64, vision 32,
vocab 4,096), 8 completion tokens and T=32.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import peak_rss_mb, run_child, trl_trainer

RUNS = ("build", "vlm-r1", "trl", "logprobs-chunked", "logprobs-plain")
PHASES = ("generation", "rewards & other", "ref log-probs", "update", "step")


@dataclass(frozen=True)
class Shape:
    """Widths of the model; depth is 2 text + 2 vision layers in both shapes."""

    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab_size: int
    vision_hidden: int
    vision_heads: int
    vision_intermediate: int
    layers: int = 2
    vision_layers: int = 2


SHAPES = {
    # Qwen/Qwen2.5-VL-3B-Instruct's widths (config.json), 2 + 2 layers.
    "3b": Shape(2048, 16, 2, 11008, 151_936, 1280, 16, 3420),
    # Every code path in seconds.
    "smoke": Shape(64, 4, 2, 128, 4096, 32, 2, 64),
}
TOKENIZER_SIZE = 2048  # asked of the locally trained tokenizer (its corpus yields ~600)
MIN_PIXELS, MAX_PIXELS = 3136, 12_845_056  # Qwen2.5-VL's processor bounds: 448x448 stays whole


# ---------------------------------------------------------------------------------- build
def build(args: argparse.Namespace) -> dict:
    """Write the model (random weights, fp32), its processor and the REC prompts."""
    import torch
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig, Qwen2_5_VLProcessor

    from vlm_r1.data.jsonl import read_samples
    from vlm_r1.data.shapes import write_shapes
    from vlm_r1.models import get_adapter
    from vlm_r1.models.tiny import TinyRecipe, get_builder, train_tokenizer
    from vlm_r1.models.tiny.qwen import mrope_section, qwen2_processor, vision_token_ids
    from vlm_r1.policy.prompts import prepare_prompt

    started = time.perf_counter()
    shape = SHAPES[args.shape]
    adapter, builder = get_adapter("qwen2_5_vl"), get_builder("qwen2_5_vl")
    tokenizer = train_tokenizer(builder, adapter.eos_token, TOKENIZER_SIZE, seed=0)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in builder.special_tokens}
    head_dim = shape.hidden // shape.heads  # 128 -> mrope_section [16, 24, 24] as the 3B's
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=shape.vocab_size,
            hidden_size=shape.hidden,
            intermediate_size=shape.intermediate,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.kv_heads,
            hidden_act="silu",
            max_position_embeddings=128_000,
            rms_norm_eps=1e-6,
            initializer_range=0.02,
            attention_dropout=0.0,
            use_sliding_window=False,
            sliding_window=32_768,
            max_window_layers=70,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": mrope_section(head_dim),
            },
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=shape.vision_layers,
            hidden_size=shape.vision_hidden,
            hidden_act="silu",
            intermediate_size=shape.vision_intermediate,
            num_heads=shape.vision_heads,
            in_channels=3,
            out_hidden_size=shape.hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            tokens_per_second=2,
            window_size=112,
            fullatt_block_indexes=[shape.vision_layers - 1],
            initializer_range=0.02,
        ),
        **{**vision_token_ids(ids), "tie_word_embeddings": True},
    )
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    head, embed = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    if head.data_ptr() != embed.data_ptr():
        raise SystemExit("the LM head is not tied to the input embedding")
    model.generation_config.eos_token_id = ids[adapter.eos_token]
    model.generation_config.pad_token_id = ids[builder.pad_token]
    model.generation_config.bos_token_id = ids[builder.pad_token]
    recipe = TinyRecipe(
        hidden=shape.hidden,
        layers=shape.layers,
        heads=shape.heads,
        kv_heads=shape.kv_heads,
        intermediate=shape.intermediate,
        vision_hidden=shape.vision_hidden,
        vision_depth=shape.vision_layers,
        vision_heads=shape.vision_heads,
        vision_intermediate=shape.vision_intermediate,
        vocab_size=len(tokenizer),
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
    )
    processor = qwen2_processor(Qwen2_5_VLProcessor, tokenizer, recipe, builder.chat_template)
    out = Path(args.model)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    data = write_shapes(
        Path(args.workdir) / "data", args.prompts, 0, 0, str(args.image_size), ["rec"]
    )
    processor = adapter.load_processor(str(out))  # as the trainer will see it
    lengths = [
        prepare_prompt(adapter, processor, s).length for s in read_samples(str(data["rec_train"]))
    ]
    return {
        "data": str(data["rec_train"]),
        "parameters": parameters,
        "head_parameters": head.numel(),
        "weights_mb": sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**20,
        "prompt_tokens": lengths,
        "tokenizer_size": len(tokenizer),
        "build_seconds": time.perf_counter() - started,
    }


# ---------------------------------------------------------------------------------- timers
class PhaseTimers:
    """Wall-clock seconds spent in wrapped methods, summed per label; knows which wrapped
    methods are running, so a nested call can be labelled by its caller."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.running: list[str] = []

    def wrap(self, owner: type, name: str, label=None) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            key = label(self.running) if callable(label) else (label or name)
            self.running.append(name)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - started
                self.running.pop()

        setattr(owner, name, timed)


# ---------------------------------------------------------------------------------- GRPO
def run_vlm_r1(args: argparse.Namespace) -> dict:
    from vlm_r1.config import (
        AlgoConfig,
        CheckpointConfig,
        DataConfig,
        LoggingConfig,
        ModelConfig,
        OptimConfig,
        RewardTerm,
        RolloutConfig,
        SpeedConfig,
        TrainConfig,
    )
    from vlm_r1.rl import trainer as grpo
    from vlm_r1.rl.rollout import HFRollout

    # Hold EOS off: every completion is max_new_tokens long. _common_kwargs builds the
    # generate() arguments of both generation paths.
    generate_kwargs = HFRollout._common_kwargs

    def forced_length(self, params):
        return {**generate_kwargs(self, params), "min_new_tokens": params.max_new_tokens}

    HFRollout._common_kwargs = forced_length
    grpo.GRPOTrainer.save = lambda self: None  # the step, not checkpoint writing
    timers = PhaseTimers()
    for name in ("rollout", "sample_groups", "collect", "update"):
        timers.wrap(grpo.GRPOTrainer, name)
    out = Path(args.workdir) / "vlm-r1"
    config = TrainConfig(
        model=ModelConfig(path=args.model, dtype="float32", gradient_checkpointing=False),
        data=DataConfig(train=args.data, shuffle=False),
        rewards=[RewardTerm("accuracy", 1.0, {"method": "rec_iou"}), RewardTerm("format", 1.0)],
        rollout=RolloutConfig(
            num_generations=args.generations, max_completion_length=args.max_completion
        ),
        algo=AlgoConfig(loss_type="grpo", beta=0.04, num_iterations=1),
        optim=OptimConfig(
            prompts_per_step=args.prompts,
            micro_batch_size=args.micro_batch,
            learning_rate=1e-6,
            max_steps=1,
        ),
        checkpoint=CheckpointConfig(output_dir=str(out), save_steps=10**9, resume="none"),
        logging=LoggingConfig(report_to="none", rollout_log_steps=0, progress=False),
        speed=SpeedConfig(),  # the defaults
    ).validate()
    grpo.run_training(config)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    s = timers.seconds
    phases = {
        "generation": s["rollout"],
        "rewards & other": s["sample_groups"] - s["rollout"],
        "ref log-probs": s["collect"] - s["sample_groups"],
        "update": s["update"],
        "step": s["collect"] + s["update"],
    }
    return {
        "phases": phases,
        "trainer_step_seconds": history[-1]["step_seconds"],
        "completion_tokens": history[-1]["completion_length"],
    }


def run_trl(args: argparse.Namespace) -> dict:
    from transformers import Trainer, TrainerCallback
    from trl import GRPOTrainer

    timers = PhaseTimers()
    collect = "_generate_and_score_completions"
    timers.wrap(GRPOTrainer, collect, "collect")
    timers.wrap(GRPOTrainer, "_generate", "generation")
    timers.wrap(
        GRPOTrainer,
        "_get_per_token_logps_and_entropies",
        lambda running: "ref log-probs" if collect in running else "update log-probs",
    )
    timers.wrap(Trainer, "get_batch_samples", "data")

    class Stamps(TrainerCallback):
        def __init__(self):
            self.begin: list[float] = []
            self.end: list[float] = []

        def on_step_begin(self, *a, **k):
            self.begin.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.end.append(time.perf_counter())

    stamps = Stamps()
    trainer = trl_trainer(
        args,
        str(Path(args.workdir) / "trl"),
        stamps,
        generation_kwargs={"min_new_tokens": args.max_completion},  # hold EOS off, as vlm-r1
        num_iterations=1,
        learning_rate=1e-6,
        max_grad_norm=1.0,
        max_steps=1,
    )
    trainer.train()
    s = timers.seconds
    step = s["data"] + stamps.end[0] - stamps.begin[0]
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    phases = {
        "generation": s["generation"],
        "rewards & other": s["collect"] - s["generation"] - s["ref log-probs"] + s["data"],
        "ref log-probs": s["ref log-probs"],
        "update": step - s["collect"] - s["data"],
        "step": step,
    }
    return {"phases": phases, "completion_tokens": logs[-1]["completions/mean_length"]}


# ----------------------------------------------------------------------------- log-probs
def run_logprobs(args: argparse.Namespace, chunked: bool) -> dict:
    """Forward + backward of N rows' completion log-probs at T tokens; the model in train mode."""
    import torch

    from vlm_r1.data.jsonl import read_samples
    from vlm_r1.models import load_model
    from vlm_r1.policy import logprobs as lp
    from vlm_r1.policy.prompts import prepare_prompt, stack_prompts

    adapter, model, processor = load_model(args.model)
    model.train()
    prompt = prepare_prompt(adapter, processor, next(iter(read_samples(args.data))))
    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id
    n, t = args.logprob_rows, args.logprob_tokens
    banned = set(tokenizer.all_special_ids) | set(adapter.forbidden_token_ids(tokenizer))
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in banned])
    generator = torch.Generator().manual_seed(0)
    ids = ordinary[torch.randint(len(ordinary), (n, t), generator=generator)]
    mask = torch.ones(n, t, dtype=torch.long)
    with torch.no_grad():  # page the (memory-mapped) weights in, so RSS counts them now
        sum(float(p.sum()) for p in model.parameters())
    rss_loaded = _current_rss_mb()
    method: str
    started = time.perf_counter()
    if chunked:
        keyword = inspect.signature(lp.completion_logprobs).parameters.get("chunk_tokens")
        extra = {}
        if keyword is None:
            method = "completion_logprobs (no chunk_tokens keyword yet: plain inside)"
        else:
            chunk = args.chunk_tokens if args.chunk_tokens else keyword.default
            if args.chunk_tokens:
                extra["chunk_tokens"] = args.chunk_tokens
            method = f"completion_logprobs, chunk_tokens={chunk}"
        logps = lp.completion_logprobs(model, [prompt] * n, ids, mask, pad, **extra)
    else:
        method = "token_logprobs(model(..., logits_to_keep=T+1).logits[:, :-1])"
        batch = stack_prompts([prompt.features] * n, pad)
        batch["input_ids"] = torch.cat([batch["input_ids"], ids], dim=1)
        batch["attention_mask"] = torch.cat([batch["attention_mask"], mask], dim=1)
        for key in ("mm_token_type_ids", "token_type_ids"):
            if key in batch:  # completion tokens are text
                batch[key] = torch.cat([batch[key], torch.zeros_like(ids)], dim=1)
        logits = model(**batch, logits_to_keep=t + 1, use_cache=False).logits[:, :-1]
        logps = lp.token_logprobs(logits, ids)
        del logits
    forward = time.perf_counter() - started
    loss = -(logps * mask).sum() / mask.sum()
    started = time.perf_counter()
    loss.backward()
    backward = time.perf_counter() - started
    return {
        "method": method,
        "rows": n,
        "tokens": t,
        "prompt_tokens": prompt.length,
        "forward_seconds": forward,
        "backward_seconds": backward,
        "loaded_rss_mb": rss_loaded,
        "logp_sum": float(logps.detach().double().sum()),
    }


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    if args.run == "build":
        result = build(args)
    elif args.run == "vlm-r1":
        result = run_vlm_r1(args)
    elif args.run == "trl":
        result = run_trl(args)
    else:
        result = run_logprobs(args, chunked=args.run == "logprobs-chunked")
    result["peak_rss_mb"] = peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    print("RESULT " + json.dumps(result), flush=True)


# -------------------------------------------------------------------------------- parent
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny widths, 8 tokens, T=32")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per optimiser step")
    parser.add_argument("--generations", type=int, default=4, help="G")
    parser.add_argument(
        "--max-completion", type=int, help="new tokens, forced (128; the issue's setting: 256)"
    )
    parser.add_argument("--micro-batch", type=int, default=4, help="completions per forward")
    parser.add_argument("--logprob-rows", type=int, default=2, help="N of the log-prob pass")
    parser.add_argument("--logprob-tokens", type=int, help="T of the log-prob pass; 1024, smoke 32")
    parser.add_argument("--chunk-tokens", type=int, help="completion_logprobs' chunk_tokens")
    parser.add_argument("--skip-logprobs", action="store_true", help="only the GRPO step")
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--shape", choices=SHAPES, default="3b", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.max_completion is None:
        args.max_completion = 8 if args.smoke else 128
    if args.logprob_tokens is None:
        args.logprob_tokens = 32 if args.smoke else 1024
    if args.smoke:
        args.shape = "smoke"
    if args.run:
        return child(args)

    started = time.perf_counter()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the children fork no tokenizer workers
    workdir = Path(tempfile.mkdtemp(prefix="vlm-r1-real-shape-"))
    args.workdir, args.model = str(workdir), str(workdir / "model")
    try:
        model = _spawn(args, "build")
        args.data = model["data"]
        _progress(
            started,
            f"built {model['parameters'] / 1e6:.0f}M parameters "
            f"({model['weights_mb']:.0f} MB) in {model['build_seconds']:.0f} s",
        )
        results = {}
        for run in ("vlm-r1", "trl"):
            results[run] = _spawn(args, run)
            r = results[run]
            _progress(
                started,
                f"{run}: {r['phases']['step']:.1f} s/step, {r['peak_rss_mb']:.0f} MB peak RSS",
            )
        if not args.skip_logprobs:
            for run in ("logprobs-chunked", "logprobs-plain"):
                results[run] = _spawn(args, run, fatal=False)
                r = results[run]
                _progress(started, f"{run}: " + (f"{r['peak_rss_mb']:.0f} MB" if r else "failed"))
        _report(args, model, results)
        cpu = sum(r["cpu_seconds"] for r in (model, *results.values()) if r)
        print(
            f"(wall time {time.perf_counter() - started:.0f} s; the children used {cpu:.0f} CPU s)"
        )
        ours, trl = results["vlm-r1"], results["trl"]
        print(
            f"memory_vs_trl={ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f} "
            f"speedup_vs_trl={trl['phases']['step'] / ours['phases']['step']:.2f}"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _progress(started: float, line: str) -> None:
    print(f"[{time.perf_counter() - started:5.0f} s] {line}", flush=True)


def _spawn(args: argparse.Namespace, run: str, fatal: bool = True) -> dict | None:
    command = [sys.executable, __file__, "--run", run, "--shape", args.shape]
    for name, value in vars(args).items():
        if name in ("run", "shape", "smoke", "skip_logprobs") or value is None:
            continue
        command += [f"--{name.replace('_', '-')}", str(value)]
    return run_child(command, repr(run), fatal)


def _report(args: argparse.Namespace, model: dict, results: dict) -> None:
    shape = SHAPES[args.shape]
    ours, trl = results["vlm-r1"], results["trl"]
    prompt = model["prompt_tokens"]
    print(
        f"\nQwen2.5-VL, {args.shape} widths {asdict(shape)}: {model['parameters'] / 1e6:.1f}M "
        f"parameters ({model['head_parameters'] / 1e6:.1f}M in the tied embedding / LM head), "
        f"fp32, tokenizer of {model['tokenizer_size']} tokens, CPU x {os.cpu_count()}"
    )
    print(
        f"GRPO step: {args.prompts} prompts x G={args.generations}, {args.image_size}x"
        f"{args.image_size} images, prompts of {min(prompt)}-{max(prompt)} tokens, "
        f"{args.max_completion} completion tokens (forced; vlm-r1 scored "
        f"{ours['completion_tokens']:.0f}, TRL {trl['completion_tokens']:.0f}), beta 0.04, "
        f"micro-batch {args.micro_batch}, lr 1e-6, no gradient checkpointing"
    )
    for name, r in (("vlm-r1", ours), ("TRL", trl)):
        if round(r["completion_tokens"]) != args.max_completion:
            print(f"WARNING: {name} scored {r['completion_tokens']} tokens per completion")
    print(f"{'seconds':<22}{'vlm-r1':>10}{'TRL':>10}{'TRL/vlm-r1':>12}")
    for phase in PHASES:
        a, b = ours["phases"][phase], trl["phases"][phase]
        ratio = f"{b / a:>11.2f}x" if a > 0 else f"{'':>12}"
        print(f"{phase:<22}{a:>10.1f}{b:>10.1f}{ratio}")
    print(f"{'  vlm-r1 step_seconds':<22}{ours['trainer_step_seconds']:>10.1f}   (its own metric)")
    print(
        f"{'peak RSS MB':<22}{ours['peak_rss_mb']:>10.0f}{trl['peak_rss_mb']:>10.0f}"
        f"{trl['peak_rss_mb'] / ours['peak_rss_mb']:>11.2f}x"
    )
    if args.skip_logprobs:
        return
    print(
        f"\nLog-prob pass alone: N={args.logprob_rows} rows x T={args.logprob_tokens} completion "
        f"tokens after a {prompt[0]}-token prompt, with gradients, forward + backward"
    )
    print(
        f"{'path':<10}{'fwd s':>8}{'bwd s':>8}{'peak RSS MB':>13}{'RSS before':>12}{'sum logp':>14}"
    )
    for run in ("logprobs-chunked", "logprobs-plain"):
        r, name = results[run], run.split("-")[1]
        if r is None:
            print(f"{name:<10}  failed (see the output above; killed for memory?)")
            continue
        print(
            f"{name:<10}{r['forward_seconds']:>8.1f}{r['backward_seconds']:>8.1f}"
            f"{r['peak_rss_mb']:>13.0f}{r['loaded_rss_mb']:>12.0f}{r['logp_sum']:>14.2f}"
            f"   {r['method']}"
        )


if __name__ == "__main__":
    main()
