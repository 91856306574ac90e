"""Several prompts' groups in one ``generate`` call sample exactly what one call per prompt
samples: each group draws from its own generator seeded with its seed, so its completions do
not depend on the other prompts in the call, their number or their order (issue #16)."""

import copy
import dataclasses
import logging
from types import SimpleNamespace

import pytest
import torch

from vlm_r1.config import ConfigError, load_config
from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.models import family_names, load_model
from vlm_r1.policy.prompts import prepare_prompt
from vlm_r1.rl.group_sampling import GroupSampler
from vlm_r1.rl.rollout import HFRollout, Rollout, SamplingParams

G = 4
MAX_NEW = 16
SEEDS = [101, 202, 303, 404]
SAMPLED = SamplingParams(G, MAX_NEW)  # temperature 1.0, no top-k / top-p
WARPED = SamplingParams(G, MAX_NEW, temperature=0.7, top_p=0.9, top_k=5)
GREEDY = SamplingParams(G, MAX_NEW, greedy=True)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Four REC samples whose prompts differ in length (longer questions), so left padding
    puts different numbers of pad tokens in front of each prompt."""
    out = tmp_path_factory.mktemp("batched")
    files = write_shapes(out, n_train=4, n_eval=0, seed=1, image_size="96..200", tasks=["rec"])
    found = list(read_samples(str(files["rec_train"])))
    return [
        dataclasses.replace(s, question=s.question + " Be brief." * (3 * i))
        for i, s in enumerate(found)
    ]


#: Added to the EOS logit of each tiny model, so rows (and whole groups) end at different
#: steps and some still reach the token limit.
EOS_BIAS = {"internvl": 3.5}


def load(tiny_path, family, samples):
    """The tiny model (EOS made likelier, see ``EOS_BIAS``), the prompts and the EOS id."""
    adapter, model, processor = load_model(tiny_path(family))
    tok = processor.tokenizer
    eos = tok.convert_tokens_to_ids(adapter.eos_token)
    head = model.get_output_embeddings()
    bias = torch.zeros(head.weight.shape[0])
    bias[eos] = EOS_BIAS.get(family, 4.0)
    head.register_forward_hook(lambda module, args, out: out + bias.to(out.device))
    prompts = [prepare_prompt(adapter, processor, s) for s in samples]
    assert len({p.length for p in prompts}) == len(prompts)
    return adapter, model, processor, prompts, eos


def backend(adapter, processor, eos, per_call, shared=True, suppress=None):
    tok = processor.tokenizer
    forbidden = adapter.forbidden_token_ids(tok) if suppress is None else suppress
    return HFRollout(
        processor,
        [eos],
        tok.pad_token_id,
        forbidden,
        shared_prefill=shared,
        prompts_per_generation=per_call,
    )


def assert_same(a: Rollout, b: Rollout) -> None:
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert torch.equal(a.truncated, b.truncated)
    assert a.texts == b.texts


def group(rollout: Rollout, index: int) -> tuple[list[list[int]], list[str]]:
    """Prompt ``index``'s completions, each cut at its mask (widths differ between calls)."""
    rows = range(index * G, (index + 1) * G)
    ids = [rollout.completion_ids[r][rollout.completion_mask[r].bool()].tolist() for r in rows]
    return ids, [rollout.texts[r] for r in rows]


# ----------------------------------------------------------------------------- sampling
def test_group_generator_draws_what_the_seeded_global_generator_draws():
    probs = torch.softmax(torch.randn(G, 50), -1)
    torch.manual_seed(7)
    expected = [torch.multinomial(probs, 1) for _ in range(5)]
    generator = torch.Generator().manual_seed(7)
    got = [torch.multinomial(probs, 1, generator=generator) for _ in range(5)]
    assert all(torch.equal(e, g) for e, g in zip(expected, got, strict=True))


def test_group_sampler_scores_pick_the_drawn_token_and_keep_groups_apart():
    scores = torch.randn(3 * G, 50)
    sampler = GroupSampler([1, 2, 3], G, temperature=1.0, top_k=None, top_p=1.0)
    out = sampler(torch.zeros(3 * G, 1, dtype=torch.long), scores)
    assert ((out == 0).sum(-1) == 1).all() and torch.isinf(out).sum() == out.numel() - 3 * G
    # Group 2 alone in its call draws what it drew between two other groups.
    alone = GroupSampler([2], G, temperature=1.0, top_k=None, top_p=1.0)
    assert torch.equal(
        alone(torch.zeros(G, 1, dtype=torch.long), scores[G : 2 * G]), out[G : 2 * G]
    )
    with pytest.raises(ValueError, match="groups"):
        GroupSampler([1], G, 1.0, None, 1.0)(torch.zeros(G + 1, 1), torch.randn(G + 1, 5))


@pytest.mark.parametrize("family", family_names())
@pytest.mark.parametrize("shared", [True, False], ids=["shared_prefill", "plain"])
def test_batched_equals_per_group(family, shared, tiny_path, samples):
    adapter, model, processor, prompts, eos = load(tiny_path, family, samples[:3])
    reference = backend(adapter, processor, eos, per_call=1, shared=shared)
    batched = backend(adapter, processor, eos, per_call=0, shared=shared)
    early_group = truncated = at_eos = False
    for params in (SAMPLED, WARPED):
        expected = reference.generate(model, prompts, SEEDS[:3], params)
        got = batched.generate(model, prompts, SEEDS[:3], params)
        assert batched.shared_prefill == shared, "batched shared prefill fell back"
        assert_same(got, expected)
        ends = got.lengths.view(-1, G).max(-1).values
        early_group |= bool((ends < ends.max()).any())
        truncated |= bool(got.truncated.any())
        at_eos |= bool((~got.truncated).any())
    # The case that matters was exercised: a whole group ended while others decoded on, some
    # rows stopped at EOS, some at the token limit.
    assert early_group and truncated and at_eos
    assert reference.shared_prefill == shared


@pytest.mark.parametrize("family", ["qwen2_5_vl", "internvl"])
def test_group_independent_of_the_other_prompts_in_the_call(family, tiny_path, samples):
    adapter, model, processor, prompts, eos = load(tiny_path, family, samples)
    batched = backend(adapter, processor, eos, per_call=0)
    everyone = batched.generate(model, prompts, SEEDS, WARPED)
    target = group(everyone, 1)
    for picks in ([1], [1, 3], [0, 1, 2], [3, 2, 1, 0], [2, 1]):
        rollout = batched.generate(
            model, [prompts[i] for i in picks], [SEEDS[i] for i in picks], WARPED
        )
        assert group(rollout, picks.index(1)) == target, picks
    # Calls of two prompts each, over all four: the same rollout as one call.
    in_pairs = backend(adapter, processor, eos, per_call=2).generate(model, prompts, SEEDS, WARPED)
    assert_same(in_pairs, everyone)
    assert batched.shared_prefill


@pytest.mark.parametrize("family", ["qwen2_5_vl", "internvl"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared_prefill", "plain"])
def test_greedy_batched_equals_per_group(family, shared, tiny_path, samples):
    adapter, model, processor, prompts, eos = load(tiny_path, family, samples)
    expected = backend(adapter, processor, eos, 1, shared).generate(model, prompts, SEEDS, GREEDY)
    got = backend(adapter, processor, eos, 0, shared).generate(model, prompts, SEEDS, GREEDY)
    assert_same(got, expected)
    ids = got.completion_ids.view(len(prompts), G, -1)
    assert (ids == ids[:, :1]).all()  # greedy: the G rows of a group agree


def test_suppressed_tokens_are_never_sampled_batched(tiny_path, samples):
    adapter, model, processor, prompts, eos = load(tiny_path, "qwen2_5_vl", samples[:3])
    free = backend(adapter, processor, eos, 0, suppress=[]).generate(
        model, prompts, SEEDS[:3], SAMPLED
    )
    drawn = free.completion_ids[free.completion_mask.bool()]
    common = [t for t in torch.bincount(drawn).argsort(descending=True).tolist() if t != eos][:3]
    banned = sorted(set(common) | set(adapter.forbidden_token_ids(processor.tokenizer)))
    got = backend(adapter, processor, eos, 0, suppress=banned).generate(
        model, prompts, SEEDS[:3], SAMPLED
    )
    assert not set(banned) & set(got.completion_ids[got.completion_mask.bool()].tolist())
    expected = backend(adapter, processor, eos, 1, suppress=banned).generate(
        model, prompts, SEEDS[:3], SAMPLED
    )
    assert_same(got, expected)


def test_checkpoint_generation_defaults_do_not_change_rollouts(tiny_path, samples, caplog):
    """A checkpoint's generation_config.json sampling defaults (chat settings) are not
    inherited: both paths sample from temperature / top-k / top-p of the config only."""
    adapter, model, processor, prompts, eos = load(tiny_path, "qwen2_5_vl", samples[:2])
    clean = copy.deepcopy(model.generation_config)
    expected = {
        params.greedy: backend(adapter, processor, eos, 1).generate(
            model, prompts, SEEDS[:2], params
        )
        for params in (SAMPLED, GREEDY)
    }
    chatty = copy.deepcopy(clean)
    chatty.update(
        do_sample=True,
        temperature=0.1,
        top_k=2,
        top_p=0.5,
        min_p=0.3,
        typical_p=0.5,
        repetition_penalty=1.8,
        no_repeat_ngram_size=2,
        min_new_tokens=4,
    )
    model.generation_config = chatty
    caplog.set_level(logging.INFO, logger="vlm_r1.rl.rollout")
    for per_call in (1, 0):
        for params in (SAMPLED, GREEDY):
            got = backend(adapter, processor, eos, per_call).generate(
                model, prompts, SEEDS[:2], params
            )
            assert_same(got, expected[params.greedy])
    assert "repetition_penalty=1.8" in caplog.text  # the user is told what is ignored


# ------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "value, message",
    [
        ("-1", "rollout.prompts_per_generation=-1 must be >= 0"),
        ("1.5", "rollout.prompts_per_generation"),
        ("nan", "rollout.prompts_per_generation"),
    ],
)
def test_prompts_per_generation_is_validated_by_name(value, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.train=x.jsonl", f"rollout.prompts_per_generation={value}"])
    assert message in str(info.value)


def test_prompts_per_generation_accepted_values_reach_the_backend():
    from vlm_r1.rl.trainer import GRPOTrainer

    assert load_config(None, ["data.train=x.jsonl"]).rollout.prompts_per_generation == 0
    for value in (0, 1, 8):
        config = load_config(
            None, ["data.train=x.jsonl", f"rollout.prompts_per_generation={value}"]
        )
        adapter = SimpleNamespace(
            stop_token_ids=lambda tok: [2], forbidden_token_ids=lambda tok: []
        )
        engine = SimpleNamespace(
            processor=SimpleNamespace(tokenizer=None), adapter=adapter, pad_token_id=0
        )
        trainer = SimpleNamespace(config=config, engine=engine)
        built = GRPOTrainer._rollout_backend(trainer)
        assert isinstance(built, HFRollout) and built.prompts_per_generation == value
    with pytest.raises(ValueError, match="prompts_per_generation"):
        HFRollout(None, [2], 0, prompts_per_generation=-1)


def test_shared_prefill_steps_aside_once_for_an_unsupported_model_but_not_for_oom(caplog):
    backend = HFRollout(processor=None, eos_token_ids=[0], pad_token_id=0)

    def unsupported():
        raise NotImplementedError("no cache repeat")

    def out_of_memory():
        raise torch.OutOfMemoryError("no memory")

    with pytest.raises(torch.OutOfMemoryError):
        backend._shared_or_none(object(), out_of_memory)
    assert backend.shared_prefill  # memory is not a reason to give the path up
    assert backend._shared_or_none(object(), lambda: "tokens") == "tokens"
    assert backend._shared_or_none(object(), unsupported) is None
    assert not backend.shared_prefill
    assert "shared-prefill generation is not supported by object" in caplog.text
