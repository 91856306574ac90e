"""What each demo mode runs: sizes, steps and the post-training recipe, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoPlan:
    #: The tiny checkpoint's size (``models/tiny/recipes.py``): tests run the plan on "test".
    model_size: str = "demo"
    # Objects twice the default size on 112x112 images (16 image tokens), so each covers a few
    # image tokens.
    image_size: str = "112"
    object_scale: float = 2.0
    # Pretraining (``base.py``). First the vision tower alone (``tower.py``, that many steps; 0:
    # none), frozen in every stage after it. Then stages of SFT, each ``task+task`` (training
    # rows mixed by row count) for a number of steps at a learning rate, with its own cosine
    # schedule. The chain a probe found (``docs/demo_history.md``): a yes/no match of colour and
    # shape words to a single object (``match1``, ``derived.py``), which sits on a plateau
    # for ~1,850 steps at 1e-3 before it is learned; boxes of single objects and named targets
    # with the match kept; named targets alone at 1e-3, until the words bind to what the tower
    # sees; then the broad mix, REC with every expression kind in both image styles
    # (``rec_mix``, its negation rows twice). This recipe's base scored ``rec_mix`` 0.72 and
    # named 0.91 on 200 rows, every kind but negation past the bar; the previous one, a longer
    # tower stage and 11,400 steps without the match, 0.58 and 0.46. The default plan's base
    # is shipped with the package; another recipe is built here (cached).
    n_pretrain: int = 8000
    pretrain_tower_steps: int = 2000
    pretrain_stages: tuple[tuple[str, int, float], ...] = (
        ("match1", 2000, 1e-3),
        ("locate+named", 300, 5e-4),
        ("match1+named+locate", 1200, 5e-4),
        ("match1+named+locate", 2000, 5e-4),
        ("named", 3000, 1e-3),
        ("rec_mix+named+negation", 4000, 1e-3),
    )
    pretrain_batch: int = 16
    #: One base for every post-training seed, as in the paper (one pretrained checkpoint).
    base_seed: int = 0
    # Narrow post-training (``rec``: attribute and relation expressions, flat backgrounds) and
    # evaluation in domain (the same kinds) and out of it (reasoning kinds, held-out colour-shape
    # pairs, textured backgrounds). Each seed writes its own post-training and eval samples.
    n_train: int = 2000
    n_eval: int = 100
    seeds: int = 1
    # Matched budget: GRPO trains on budget_prompts x G completions, SFT on as many samples.
    budget_prompts: int = 256
    sft_batch: int = 16
    sft_lr: float = 5e-4
    grpo_prompts_per_step: int = 4
    grpo_generations: int = 8
    grpo_lr: float = 1e-4
    # KL to the base, as the paper's recipe has (VLM-R1: beta 0.04).
    grpo_beta: float = 0.04
    grpo_temperature: float = 1.0
    # rec_acc pays 1 for IoU >= 0.5: a continuous IoU reward let a weak model hedge toward one
    # typical box (an earlier demo: centre spread 0.44 of the truth's, Acc@0.5 down).
    grpo_reward: str = "rec_acc"
    max_completion_length: int = 40
    # --full: the detection ablation (AP vs odLength) from a base also pretrained on detection.
    ovd_ablation: bool = False
    # Detection SFT from the base (``ovd`` rows, cosine, its tower frozen as in the base's
    # stages). With the earlier, end-to-end base a probe scored on 100 eval rows: mAP 0.12 at
    # step 700 of a 1,400-step schedule, 0.16 at 1,050, 0.18 at the end (1.1-1.5 s a step).
    ovd_pretrain_steps: int = 1000
    ovd_pretrain_lr: float = 5e-4
    # 48 GRPO steps a run (under 3.7 s each idle, 4-7 s busy): room for the box count to drift
    # under plain AP.
    ovd_prompts: int = 192
    # A detection answer lists up to 6 labelled boxes, ~25 tokens each: 96 tokens cut off 29% of
    # the training answers before </answer> (the longest are ~220 tokens).
    ovd_max_completion_length: int = 256

    @property
    def freeze_vision(self) -> bool:
        """Whether training after the tower stage (the base's stages, the detection SFT) keeps
        the vision tower frozen: it does when a tower stage pretrained it."""
        return self.pretrain_tower_steps > 0


PLANS = {
    "quick": DemoPlan(
        n_pretrain=400,
        pretrain_tower_steps=30,
        pretrain_stages=(("locate", 60, 5e-4), ("rec_mix+locate", 20, 5e-4)),
        n_train=400,
        n_eval=40,
        budget_prompts=96,
        grpo_generations=6,
    ),
    "default": DemoPlan(),
    "full": DemoPlan(seeds=3, ovd_ablation=True),
}
#: Qwen3-VL: its vision tower has absolute position embeddings, which a from-scratch tiny model
#: learns "where" with (``models/tiny/position_codes.py``).
FAMILY = "qwen3_vl"
