"""Typed configuration: one dataclass per concern, YAML recipes, dotted CLI overrides.

Every field is documented once, here, and carries its own rule: a ``Literal`` type lists the
choices, a ``Bounds`` annotation the allowed range, and every number must be finite.
``load_config("configs/grpo_rec.yaml", ["algo.beta=0"])`` returns a validated ``TrainConfig``;
a wrong key or value raises ``ConfigError`` naming the key and what is allowed, before any model
is loaded. Defaults follow the VLM-R1 REC recipe (G = 8, beta = 0.04, lr = 1e-6, ...); the
shipped tiny configs scale them to a CPU.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from vlm_r1.config.rules import (
    Bounds,
    ConfigError,
    Fraction,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Seed,
    UnitOpen,
    check_fields,
)


@dataclass
class LoraConfig:
    enabled: bool = False
    """Train LoRA adapters instead of all weights (the reference model is then the base model
    with adapters disabled, so no second copy is kept in memory)."""
    r: PositiveInt = 64
    """LoRA rank (VLM-R1's LoRA recipe: 64)."""
    alpha: PositiveInt = 128
    """LoRA scaling alpha (VLM-R1: 128)."""
    dropout: Fraction = 0.05
    """Dropout on the LoRA path (VLM-R1: 0.05)."""
    target_modules: list[str] | None = None
    """Module names to adapt; default: the family's language-model linears (never the vision tower)."""
    save_merged: bool = False
    """Also write a merged full checkpoint next to the adapter at each save."""


@dataclass
class ModelConfig:
    path: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    """A local checkpoint folder or a hub id."""
    family: str | None = None
    """Model family (qwen2_vl, qwen2_5_vl, qwen3_vl, internvl); detected from the checkpoint if unset."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Compute dtype. Training keeps float32 master weights and optimizer state and computes in bfloat16 when asked (mixed precision; float16 is refused for training); under LoRA the frozen base is held in this dtype. Evaluation loads the weights in it."""
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3"] = "sdpa"
    """eager, sdpa, flash_attention_2 (needs flash-attn + CUDA) or flash_attention_3."""
    freeze_vision: bool = False
    """Freeze the vision tower and its merger/projector (VLM-R1's freeze_vision_modules)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    min_pixels: PositiveInt | None = None
    """Processor lower bound on image pixels (Qwen families), e.g. 3136."""
    max_pixels: PositiveInt | None = None
    """Processor upper bound on image pixels (Qwen families), e.g. 12845056 in VLM-R1."""
    lora: LoraConfig = field(default_factory=LoraConfig)

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("model.path is required: a checkpoint folder or a hub id")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ConfigError(
                f"model.min_pixels={self.min_pixels} is larger than model.max_pixels={self.max_pixels}"
            )


@dataclass
class DataConfig:
    #: ``data.train`` starting with this names one Hugging Face ``datasets`` source.
    DATASETS_PREFIX = "hf:"
    #: The sample fields a ``datasets`` row provides; ``data.columns`` maps them to columns.
    COLUMN_FIELDS = ("image", "problem", "solution", "task", "accu_reward_method", "id")

    train: str = ""
    """Training data: VLM-R1 JSONL/JSON files, several joined with ':'; or one Hugging Face
    ``datasets`` source after ``hf:``: a local parquet/arrow/json/csv file or folder of them, a
    folder written by ``save_to_disk``, or a hub dataset name (``hf:org/name``)."""
    image_folders: str | None = None
    """Image folders matching ``train`` (':'-joined); default: each data file's own folder. An
    ``hf:`` source takes one folder, for image columns holding relative paths (default: the
    local source's folder)."""
    reward_methods: str | None = None
    """Per-file accu_reward_method (':'-joined; one, taken whole, for an ``hf:`` source); a
    row's own method wins."""
    on_error: Literal["raise", "skip"] = "raise"
    """raise: stop at the first bad row (file:line:field); skip: skip bad rows and count them."""
    check_images: Literal["none", "exists", "header"] = "header"
    """none, exists (path only) or header (also open each image's header) when reading rows."""
    max_samples: PositiveInt | None = None
    """Use only the first N rows (quick experiments)."""
    shuffle: bool = True
    """Shuffle prompts each epoch (seeded, identical on every rank)."""
    max_image_pixels: PositiveInt = 64_000_000
    """Images with more pixels (width x height, read from the file header before decoding) are
    bad data: an error, or skipped with ``on_error=skip``. Guards against decompression bombs."""
    max_text_chars: PositiveInt = 100_000
    """Questions and answers longer than this many characters are bad data, rejected before
    tokenising (``rollout.max_prompt_length`` then limits the tokenised prompt)."""
    split: str = "train"
    """``hf:`` sources: the split to read."""
    subset: str | None = None
    """``hf:`` hub sources: the configuration (subset) name, for datasets that have several."""
    columns: dict[str, str] = field(default_factory=dict)
    """``hf:`` sources: sample field -> column name, for fields stored under another name
    (image, problem, solution, task, accu_reward_method, id; each defaults to its own name,
    image also to ``images``). Every row then passes the same checks as a JSONL row."""
    streaming: bool = False
    """``hf:`` sources: read rows as they arrive instead of preparing the whole split first
    (with ``max_samples``, reading stops once that many samples are read)."""
    cache_dir: str | None = None
    """``hf:`` sources: where ``datasets`` prepares the split, and where images stored in rows
    (bytes) are written as files named by their content hash (``<cache_dir>/vlm_r1_images``);
    default: the ``datasets`` cache (``HF_DATASETS_CACHE``)."""

    def validate(self) -> None:
        if not self.train:
            raise ConfigError(
                "data.train is required: a VLM-R1 JSONL file (or several joined with ':')"
            )
        if self.train.startswith(self.DATASETS_PREFIX):
            self._validate_datasets_source()
            return
        # A setting that cannot apply would be silently ignored: refuse it by name instead.
        unused = {
            "split": self.split != "train",
            "subset": self.subset is not None,
            "columns": bool(self.columns),
            "streaming": self.streaming,
            "cache_dir": self.cache_dir is not None,
        }
        for key, is_set in unused.items():
            if is_set:
                raise ConfigError(
                    f"data.{key} applies only to a datasets source (data.train=hf:...); "
                    f"data.train={self.train!r} is read as VLM-R1 JSONL/JSON"
                )

    def _validate_datasets_source(self) -> None:
        if not self.train[len(self.DATASETS_PREFIX) :].strip():
            raise ConfigError(
                f"data.train={self.train!r} names no dataset; write hf:/path/to/folder or "
                "hf:org/name"
            )
        if not self.split:
            raise ConfigError("data.split is empty; name the split to read (e.g. train)")
        for key, column in self.columns.items():
            if key not in self.COLUMN_FIELDS:
                raise ConfigError(
                    f"data.columns.{key} is not a sample field; map one of "
                    f"{', '.join(self.COLUMN_FIELDS)}"
                )
            if not isinstance(column, str) or not column:
                raise ConfigError(f"data.columns.{key}={column!r} must be a column name")


@dataclass
class RewardTerm:
    name: str = "accuracy"
    """A reward name (see ``vlm_r1.rewards``), a VLM-R1 method name, or 'module:function'."""
    weight: float = 1.0
    """Weight of this reward in the total (negative: a penalty)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments bound to the reward function (e.g. {threshold: 0.5})."""


def _default_rewards() -> list[RewardTerm]:
    return [RewardTerm("accuracy", 1.0, {"method": "rec_iou"}), RewardTerm("format", 1.0)]


@dataclass
class RolloutConfig:
    backend: Literal["hf", "vllm"] = "hf"
    """Generation backend: hf (transformers generate) or vllm (colocated vLLM engine, GPU only,
    ``pip install 'vlm-r1[vllm]'``). Backends implement ``RolloutBackend``."""
    vllm_gpu_memory_utilization: UnitOpen = 0.3
    """Share of GPU memory the colocated vLLM engine may take (the rest is for training)."""
    vllm_max_model_len: PositiveInt | None = None
    """vLLM context length (prompt + completion); None = the model's own limit."""
    num_generations: Annotated[int, Bounds(2)] = 8
    """G: completions sampled per prompt (one group; >= 2, a group needs a spread)."""
    temperature: Positive = 1.0
    """Sampling temperature (also applied to the log-probs, as the sampler saw them)."""
    top_p: Annotated[float, Bounds(0, 1, low_open=True)] = 1.0
    """Nucleus sampling threshold."""
    top_k: NonNegativeInt = 0
    """Top-k sampling (0 = off)."""
    max_prompt_length: PositiveInt | None = None
    """Prompts (image tokens included) longer than this are skipped and counted; None = no limit."""
    max_completion_length: PositiveInt = 1024
    """Maximum generated tokens per completion."""
    prompts_per_generation: NonNegativeInt = 0
    """hf backend: prompts generated together in one ``generate`` call (their G completions
    each); 0 = all of this process's prompts of the step (or sampling round). Completions are
    the same for every value (each prompt samples from its own seed); smaller values cap the
    generation memory, 1 is the one-call-per-prompt reference path."""


@dataclass
class AlgoConfig:
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo", "gspo"] = "grpo"
    """grpo (per-sequence mean), bnpo (token mean per micro-batch), dr_grpo (constant
    normaliser), dapo (token mean over the whole batch) or gspo (sequence-level ratio)."""
    beta: NonNegative = 0.04
    """KL coefficient (k3 estimator) to the reference model; 0 loads no reference model."""
    epsilon_low: UnitOpen = 0.2
    """Lower clip range: ratios below 1 - epsilon_low are clipped."""
    epsilon_high: Positive | None = None
    """Upper clip range (clip-higher, DAPO); defaults to epsilon_low."""
    num_iterations: PositiveInt = 1
    """mu: optimiser updates per rollout batch (old log-probs are stored for mu > 1)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Advantage scaling: group ((r - mean) / std per group), batch (std over the batch) or none (Dr. GRPO)."""
    dynamic_sampling: bool = False
    """Drop groups whose rewards are all equal and top up with new prompts (DAPO)."""
    max_resample_rounds: NonNegativeInt = 3
    """Cap on top-up rounds per step with dynamic sampling."""
    mask_truncated: bool = False
    """Overlong filtering: completions that hit max_completion_length get no loss."""
    kl_clamp: Positive = 10.0
    """Above this value of log(ref/policy) the k3 KL continues linearly, so exp() cannot
    overflow and the gradient stays non-zero (below it the KL is exact)."""
    kl_bias_correction: bool = False
    """Multiply the k3 KL by the importance ratio pi/pi_old (TRL's use_bias_correction_kl,
    DeepSeek-V3.2): an unbiased KL gradient when mu > 1. Off matches VLM-R1."""
    top_entropy_quantile: Annotated[float, Bounds(0, 1, low_open=True)] = 1.0
    """Train the policy-gradient term only on the top fraction of completion tokens by entropy
    (each micro-batch's tokens on each process; Wang et al. 2025 keep 0.2; TRL's name). The KL
    term still counts every token. 1.0 keeps all tokens."""

    def validate(self) -> None:
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon_low


@dataclass
class OptimConfig:
    prompts_per_step: PositiveInt = 16
    """Prompts per optimiser step across all processes (VLM-R1 REC: 16 x G=8 = 128 completions)."""
    micro_batch_size: PositiveInt = 8
    """Completions per forward/backward pass; gradients accumulate over the step."""
    learning_rate: NonNegative = 1e-6
    """AdamW learning rate (VLM-R1: 1e-6)."""
    weight_decay: NonNegative = 0.0
    """AdamW decoupled weight decay."""
    adam_beta1: Fraction = 0.9
    """AdamW first-moment decay, in [0, 1)."""
    adam_beta2: Fraction = 0.999
    """AdamW second-moment decay, in [0, 1)."""
    warmup_steps: NonNegativeInt = 0
    """Linear warmup steps."""
    schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate schedule after warmup: constant or cosine."""
    max_grad_norm: NonNegative = 1.0
    """Gradient clipping norm (0 = off)."""
    max_steps: PositiveInt = 600
    """Optimiser steps to run."""


@dataclass
class CheckpointConfig:
    output_dir: str = "out/grpo"
    """Run folder: checkpoints, logs, rollouts."""
    save_steps: PositiveInt = 100
    """Save every N optimiser steps (and at the end); with num_iterations > 1, at the end of the
    rollout batch that reaches the step, so resume never loses a half-used batch."""
    keep_last: NonNegativeInt = 2
    """Checkpoints to keep (oldest are deleted; 0 keeps all). Keep 2 or more so that resume can
    fall back to the previous checkpoint when the newest one is damaged."""
    resume: str = "none"
    """none: start a new run (an error if output_dir already holds one, unless ``overwrite``);
    auto (``--resume``): continue from the newest complete checkpoint in output_dir, or start
    if there is none; or the path of one checkpoint folder."""
    overwrite: bool = False
    """With resume=none, delete the run already in output_dir (checkpoints, final/, metrics,
    rollouts, logs) and start afresh (``--overwrite``)."""
    push_to_hub: str = ""
    """A Hugging Face model repo id (``owner/name``): at the end of training the main process
    uploads ``final/`` with its model card there (needs a hub token: ``hf auth login`` or
    ``HF_TOKEN``); empty: no upload (``vlm-r1 push`` uploads a finished run later)."""
    push_private: bool = True
    """Create the hub repo as private (a repo that already exists keeps its visibility)."""

    #: Characters the hub allows in each half of ``owner/name``.
    _REPO_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")

    @classmethod
    def check_repo_id(cls, repo_id: str, key: str) -> None:
        """Refuse a hub repo id that is not ``owner/name`` by the hub's naming rules (letters,
        digits, ``-_.``; no leading/trailing ``-``/``.``, no ``--``/``..``; names up to 96
        characters), before any model loads rather than after training when the upload runs."""
        parts = repo_id.split("/")
        ok = len(parts) == 2 and all(
            0 < len(part) <= 96
            and set(part) <= cls._REPO_CHARS
            and part[0] not in "-."
            and part[-1] not in "-."
            and "--" not in part
            and ".." not in part
            for part in parts
        )
        if not ok:
            raise ConfigError(
                f"{key}={repo_id!r} is not a hub repo id: use owner/name (letters, digits, "
                "'-', '_', '.'), e.g. my-user/qwen2.5-vl-3b-rec-grpo"
            )

    def validate(self) -> None:
        if not self.output_dir:
            raise ConfigError("checkpoint.output_dir is required")
        if self.push_to_hub:
            self.check_repo_id(self.push_to_hub, "checkpoint.push_to_hub")
        if self.overwrite and self.resume != "none":
            raise ConfigError(
                f"checkpoint.overwrite=true and checkpoint.resume={self.resume!r} contradict "
                "each other: overwrite starts afresh, resume continues"
            )


@dataclass
class LoggingConfig:
    log_steps: PositiveInt = 1
    """Log metrics every N steps."""
    report_to: Literal["tensorboard", "wandb", "trackio", "none"] = "tensorboard"
    """tensorboard, wandb, trackio or none (through accelerate's trackers; a tracker whose
    package is missing falls back to none with a warning). wandb and trackio also get each
    written rollout step as a table (prompt, completion, rewards, image with the boxes drawn).
    Both run without a network: ``WANDB_MODE=offline``; trackio writes locally by default."""
    rollout_log_steps: NonNegativeInt = 10
    """Write sampled rollouts to rollouts/step_XXXX.jsonl every N steps (0 = never)."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class SpeedConfig:
    """Ways of not repeating work across a group's G completions (results are unchanged)."""

    shared_prefill: bool = True
    """Generation: encode the image and prefill the prompt once per group, then expand the
    KV cache G times (families that cannot fall back to repeating the prompt, with a log line)."""
    share_image_features: bool = True
    """Training forwards: encode each prompt's images once per step and hand the features to its
    G rows (frozen vision tower: once per rollout batch, reused by policy, old and reference)."""
    share_prompt_prefix: bool = True
    """Training forwards: run each prompt (image tokens included) once per micro-batch and only
    the completions per row, from the prompt's KV cache (single-process runs)."""


@dataclass
class PromptConfig:
    """The words around each question: an optional system turn and a template per task.

    The defaults are VLM-R1's prompts, so its data trains unchanged. GRPO, SFT and evaluation
    read the same section, and every saved model folder records the resolved settings
    (``vlm_r1_prompt.json``) so that ``vlm-r1 eval`` asks a trained model the way it was
    trained unless ``--prompt-config`` says otherwise.
    """

    #: The tasks a template may be given for (``data.sample.TASKS``; config sits below data).
    TASKS = ("rec", "ovd", "count", "qa", "point")

    system: str = ""
    """A system message put before every prompt, for every model family. Empty: none is added,
    and a chat template's own default stays (Qwen2/2.5-VL's "You are a helpful assistant.")."""
    templates: dict[str, str] = field(default_factory=dict)
    """Task (rec, ovd, count, qa, point) -> the user text around its question, a Python format
    string with ``{question}`` exactly once and no other field (write a literal brace as ``{{``
    or ``}}``; quote the value in YAML). Tasks left out keep VLM-R1's template: think in
    <think></think>, answer in <answer></answer>, boxes as JSON for rec and ovd (a point
    ``[x, y]`` for point)."""

    def validate(self) -> None:
        if not isinstance(self.system, str):
            raise ConfigError(f"prompt.system={self.system!r} must be a string")
        for task, template in self.templates.items():
            key = f"prompt.templates.{task}"
            if task not in self.TASKS:
                raise ConfigError(
                    f"{key}: there is no task {task!r}; templates are per task: "
                    f"{', '.join(self.TASKS)}"
                )
            self.check_template(template, key)

    @staticmethod
    def check_template(template: Any, key: str) -> None:
        """A template fills in the question and nothing else: a stray field would fail (or,
        worse, format silently) at the first sample of that task, after the model loaded."""
        if not isinstance(template, str):
            raise ConfigError(
                f"{key}={template!r} must be a string containing {{question}} (in YAML or an "
                "override, quote it: a bare {question} reads as a mapping)"
            )
        try:
            fields = [
                (name, spec, conversion)
                for _, name, spec, conversion in string.Formatter().parse(template)
                if name is not None
            ]
        except ValueError as err:
            raise ConfigError(
                f"{key}={template!r} is not a valid template ({err}); write a literal brace "
                "as {{ or }}"
            ) from err
        for name, spec, conversion in fields:
            if (name, spec, conversion) != ("question", "", None):
                written = "{" + name + (f"!{conversion}" if conversion else "")
                written += (f":{spec}" if spec else "") + "}"
                raise ConfigError(
                    f"{key} has the field {written}; {{question}} is the only one allowed "
                    "(write a literal brace as {{ or }})"
                )
        if len(fields) != 1:
            raise ConfigError(
                f"{key}={template!r} must contain {{question}} exactly once, not {len(fields)} "
                "times"
            )


@dataclass
class EvalConfig:
    """Validation during training: every ``steps`` steps and after the last one, the policy
    answers held-out samples greedily and the answers are scored by ``vlm-r1 eval``'s code
    (REC Acc@0.5 / mIoU, detection mAP, counting / QA accuracy), logged as
    ``eval/<task>/<metric>``. Every process generates a share; the numbers are those of one
    process. Training is unchanged by it (same losses and weights as with it off).
    """

    steps: NonNegativeInt = 0
    """Evaluate every N optimiser steps and after the last step; 0 = never (the default)."""
    data: str = ""
    """Held-out samples, read like ``vlm-r1 eval --data``: VLM-R1 JSONL/JSON (several joined
    with ':') or one ``hf:`` datasets source; rows may name built-in reward methods only.
    Read and checked when training starts, before the model loads."""
    image_folders: str | None = None
    """Image folders matching ``data`` (':'-joined), as ``vlm-r1 eval --image-folders``;
    default: each data file's own folder."""
    limit: PositiveInt | None = None
    """Evaluate N samples drawn once at random with ``vlm-r1 eval --limit``'s fixed seed, so
    every validation (and a resumed run's) scores the same ones; None: every sample."""
    batch_size: PositiveInt = 8
    """Prompts per greedy ``generate`` call. Left padding makes answers depend on which
    prompts share a batch: the same value as ``vlm-r1 eval --batch-size`` gives its numbers."""
    max_new_tokens: PositiveInt = 256
    """Most tokens generated per answer (``vlm-r1 eval --max-new-tokens``)."""
    metric_convention: Literal["default", "vlm-r1"] = "default"
    """default (IoU >= 0.5) or vlm-r1 (IoU > 0.5 with +1-pixel box sizes, as VLM-R1's
    scripts), as ``vlm-r1 eval --metric-convention``."""
    split: str | None = None
    """``hf:`` sources: the split to read (default: the source's only split)."""
    columns: dict[str, str] = field(default_factory=dict)
    """``hf:`` sources: sample field -> column name, as ``data.columns``."""

    def validate(self) -> None:
        if self.steps and not self.data:
            raise ConfigError(
                f"eval.steps={self.steps} needs eval.data: a held-out VLM-R1 JSONL file (or "
                "hf:...); set eval.steps=0 to train without validation"
            )
        if self.data.startswith(DataConfig.DATASETS_PREFIX):
            return
        for key, is_set in (("split", self.split is not None), ("columns", bool(self.columns))):
            if is_set:
                raise ConfigError(
                    f"eval.{key} applies only to a datasets source (eval.data=hf:...); "
                    f"eval.data={self.data!r} is read as VLM-R1 JSONL/JSON"
                )


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    rewards: list[RewardTerm] = field(default_factory=_default_rewards)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Validation on held-out data during training (off unless ``eval.steps`` > 0)."""
    seed: Seed = 0
    """Seed for data order, sampling and initialisation."""

    def validate(self) -> TrainConfig:
        """Check every value now, before any model is loaded. (Reward names are resolved by
        the reward registry when training starts, still before the model loads.)"""
        check_fields(self)
        if not self.rewards:
            raise ConfigError("rewards is empty: give at least one reward, e.g. [{name: accuracy}]")
        return self
