"""Prompts as configuration (``prompt.system``, ``prompt.templates``): the defaults are VLM-R1's
prompts byte for byte, custom settings reach the tokens, bad templates fail at config load
naming the key, and the settings a model folder records are read back for evaluation."""

import json
import re
import shutil
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml
from PIL import Image

from vlm_r1.config import ConfigError, DataConfig, TrainConfig, load_config
from vlm_r1.config.sections import PromptConfig
from vlm_r1.data.sample import TASKS, BoxSolution, Sample
from vlm_r1.data.shapes import write_shapes
from vlm_r1.eval.options import resolve_prompt
from vlm_r1.eval.runner import GreedyGenerator, evaluate_checkpoint
from vlm_r1.models import get_adapter
from vlm_r1.models.adapter import TASK_TEMPLATES
from vlm_r1.policy.prompts import (
    PROMPT_FILE,
    chat_prompt_text,
    prepare_prompt,
    read_prompt_file,
    resolved_prompt,
    write_prompt_file,
)
from vlm_r1.rl.vllm_rollout import build_requests
from vlm_r1.sft import SFTConfig

# ----------------------------------------------------------------------------- goldens
# Written down from the code before prompts became configuration: VLM-R1 data must train and
# evaluate on exactly these strings. The qa question holds braces, which are not fields.
QUESTIONS = {
    "rec": "the red circle",
    "ovd": 'Please carefully check the image and detect the following objects: ["star", "cat"].',
    "count": "How many circles are there?",
    "qa": "What colour is the {odd} square?",
    "point": "Click the blue square.",
}
THINK = (
    " First output the thinking process in <think> </think> tags and then output the final "
    "answer in <answer> </answer> tags."
)
INSTRUCTIONS = {
    "rec": "the red circle" + THINK + " Output the final answer in JSON format.",
    "ovd": 'Please carefully check the image and detect the following objects: ["star", "cat"].'
    + THINK
    + " Output the bbox coordinates of detected objects in <answer></answer>. The bbox "
    'coordinates in Markdown format should be: \n```json\n[{"bbox_2d": [x1, y1, x2, y2], '
    '"label": "object name"}]\n```\n If no targets are detected in the image, simply respond '
    'with "None".',
    "count": "How many circles are there?" + THINK,
    "qa": "What colour is the {odd} square?" + THINK,
    "point": "Click the blue square."
    + THINK
    + " Output the point to click as [x, y] in JSON format.",
}
# The chat text around the instruction, per family (tiny checkpoints carry the real templates).
CHAT = {
    "qwen2_5_vl": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
    "internvl": ("<|im_start|>user\n<IMG_CONTEXT>\n", "<|im_end|>\n<|im_start|>assistant\n"),
    "qwen3_vl": (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>",
        "<|im_end|>\n<|im_start|>assistant\n",
    ),
}
CUSTOM = PromptConfig(
    system="You locate things. Reply in JSON.",
    templates={"rec": "Locate: {question}. Answer as {{x1, y1, x2, y2}} in <answer></answer>."},
)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompt_image") / "red.png"
    Image.new("RGB", (97, 131), (200, 30, 30)).save(path)
    return str(path)


def sample(task, image):
    solution = BoxSolution(((10.0, 12.0, 50.0, 60.0),), (None,)) if task == "rec" else "3"
    return Sample(f"{task}-0", (image,), QUESTIONS[task], solution, task)


@pytest.fixture(scope="module", params=sorted(CHAT))
def family(request, tiny_path):
    adapter = get_adapter(request.param)
    return request.param, adapter, adapter.load_processor(tiny_path(request.param))


def test_the_prompt_section_lists_the_data_tasks():
    assert PromptConfig.TASKS == TASKS == tuple(TASK_TEMPLATES)


@pytest.mark.parametrize("task", TASKS)
def test_default_instruction_is_vlm_r1s_wording(task):
    adapter = get_adapter("qwen2_5_vl")
    assert adapter.prompt(task, QUESTIONS[task]) == INSTRUCTIONS[task]
    assert adapter.prompt(task, QUESTIONS[task], PromptConfig().templates) == INSTRUCTIONS[task]


def test_default_chat_prompt_and_tokens_are_unchanged(family, image):
    """Byte-identical chat text, and the tokens prepare_prompt builds are that text's."""
    name, adapter, processor = family
    before, after = CHAT[name]
    for task in TASKS:
        s = sample(task, image)
        golden = before + INSTRUCTIONS[task] + after
        prepared = prepare_prompt(adapter, processor, s)
        assert prepared.chat_text == golden
        assert chat_prompt_text(adapter, processor, s, PromptConfig()) == golden
        again = processor(text=[golden], images=[Image.open(image)], return_tensors="pt")
        assert torch.equal(prepared.features["input_ids"], again["input_ids"])


def test_custom_system_and_template_reach_the_tokens(family, image):
    name, adapter, processor = family
    prepared = prepare_prompt(adapter, processor, sample("rec", image), prompt_config=CUSTOM)
    decoded = processor.tokenizer.decode(prepared.features["input_ids"][0])
    question = "Locate: the red circle. Answer as {x1, y1, x2, y2} in <answer></answer>."
    for text in (prepared.chat_text, decoded):
        assert text.startswith("<|im_start|>system\nYou locate things. Reply in JSON.<|im_end|>")
        assert question + "<|im_end|>\n<|im_start|>assistant\n" in text
        assert "You are a helpful assistant." not in text  # the set system turn replaces it
        assert "First output the thinking process" not in text
    # A task the settings leave out keeps VLM-R1's template (the system turn still applies).
    count = prepare_prompt(adapter, processor, sample("count", image), prompt_config=CUSTOM)
    assert count.chat_text.endswith(INSTRUCTIONS["count"] + CHAT[name][1])
    assert "You locate things." in count.chat_text


def test_vllm_requests_send_the_prepared_chat_text(family, image):
    """The vLLM backends (GRPO rollouts and eval) send the text the HF features came from."""
    _, adapter, processor = family
    prompts = [prepare_prompt(adapter, processor, sample("rec", image), prompt_config=CUSTOM)]
    (request,) = build_requests(adapter, processor, prompts)
    assert request["prompt"] == prompts[0].chat_text
    assert "Locate: the red circle." in request["prompt"]
    prompts[0].chat_text = ""
    with pytest.raises(ValueError, match="no chat_text"):
        build_requests(adapter, processor, prompts)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("cls", [TrainConfig, SFTConfig])
@pytest.mark.parametrize(
    "override, message",
    [
        ('prompt.templates.rec="Find it."', "prompt.templates.rec='Find it.' must contain"),
        ('prompt.templates.rec="{question} {question}"', "exactly once, not 2 times"),
        ('prompt.templates.rec="{Question}"', "prompt.templates.rec has the field {Question}"),
        (
            'prompt.templates.ovd="{question} {answer}"',
            "prompt.templates.ovd has the field {answer}",
        ),
        (
            """prompt.templates.rec='{question} {"bbox_2d": [1, 2, 3, 4]}'""",
            'prompt.templates.rec has the field {"bbox_2d"',
        ),
        ('prompt.templates.qa="{question!r}"', "prompt.templates.qa has the field {question!r}"),
        (
            'prompt.templates.rec="{question} }"',
            "prompt.templates.rec='{question} }' is not a valid",
        ),
        (
            "prompt.templates.rec={question}",
            "prompt.templates.rec={'question': None} must be a string",
        ),
        ('prompt.templates.caption="{question}"', "prompt.templates.caption: there is no task"),
        ("prompt.templates=[1]", "prompt.templates=[1] must be a mapping"),
        ("prompt.sytem=hi", "unknown config key 'prompt.sytem'"),
    ],
)
def test_bad_prompt_settings_fail_at_load_naming_the_key(cls, override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.train=x.jsonl", override], cls=cls)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_good_prompt_settings_load_from_a_recipe(tmp_path):
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "data": {"train": "x.jsonl"},
                "prompt": {
                    "system": "Be brief.",
                    "templates": {"rec": "{question} Give {{bbox_2d: [x1, y1, x2, y2]}}."},
                },
            }
        )
    )
    config = load_config(recipe)
    assert config.prompt.system == "Be brief."
    assert get_adapter("qwen2_vl").prompt("rec", "a cat", config.prompt.templates) == (
        "a cat Give {bbox_2d: [x1, y1, x2, y2]}."
    )
    assert load_config(None, ["data.train=x.jsonl"]).prompt == PromptConfig()  # the default


def test_settings_built_in_code_are_checked_too():
    """The demo builds configs as dataclasses: ``validate()`` applies the same rules."""
    config = TrainConfig(
        data=DataConfig(train="x.jsonl"),
        prompt=PromptConfig(templates={"count": "{question} {n}"}),
    )
    with pytest.raises(ConfigError, match=re.escape("prompt.templates.count has the field {n}")):
        config.validate()


# ----------------------------------------------------------------------------- saved settings
def test_a_model_folder_records_every_template_and_eval_reads_it_back(tmp_path):
    write_prompt_file(tmp_path, {"system": "Be brief.", "templates": {"rec": "R: {question}"}})
    saved = json.loads((tmp_path / PROMPT_FILE).read_text())
    assert saved["system"] == "Be brief."
    assert saved["templates"] == {**TASK_TEMPLATES, "rec": "R: {question}"}  # defaults pinned
    settings, source = resolve_prompt(None, str(tmp_path))
    assert source == str(tmp_path / PROMPT_FILE)
    assert settings.system == "Be brief." and settings.templates["rec"] == "R: {question}"
    # A config without a prompt section records VLM-R1's prompts.
    write_prompt_file(tmp_path, None)
    assert read_prompt_file(tmp_path / PROMPT_FILE, "x") == PromptConfig(
        templates=dict(TASK_TEMPLATES)
    )
    assert resolved_prompt(CUSTOM)["templates"]["ovd"] == TASK_TEMPLATES["ovd"]


def test_prompt_config_flag_wins_and_takes_a_section_or_a_recipe(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    write_prompt_file(model, {"system": "saved"})
    section = tmp_path / "prompt.yaml"
    section.write_text("system: from the flag\ntemplates:\n  qa: 'Q: {question}'\n")
    settings, source = resolve_prompt(str(section), str(model))
    assert (settings.system, settings.templates, source) == (
        "from the flag",
        {"qa": "Q: {question}"},
        str(section),
    )
    run_config = tmp_path / "config.json"  # a run folder's config.json holds the section
    run_config.write_text(json.dumps({"model": {}, "prompt": {"system": "run", "templates": {}}}))
    assert resolve_prompt(str(run_config), str(model))[0].system == "run"
    empty = tmp_path / "empty.json"  # {}: VLM-R1's prompts, whatever the folder saved
    empty.write_text("{}")
    assert resolve_prompt(str(empty), str(model))[0] == PromptConfig()
    assert resolve_prompt(CUSTOM, str(model)) == (CUSTOM, "given")  # settings built in code
    with pytest.raises(ConfigError, match="prompt.templates.qa"):
        resolve_prompt(PromptConfig(templates={"qa": "none"}), str(model))
    assert resolve_prompt(None, str(tmp_path / "no-file-here")) == (PromptConfig(), "default")
    assert resolve_prompt(None, "Qwen/Qwen2.5-VL-3B-Instruct") == (PromptConfig(), "default")


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "templates:\n  rec: 'no field'\n",
            "--prompt-config ({}): prompt.templates.rec='no field'",
        ),
        ("model: {path: x}\n", "unknown prompt key(s) model"),
        ("system: [1\n", "not valid YAML/JSON"),
        ("- a\n", "prompt settings must be a mapping"),
        ('{"system": null}', "prompt.system=None must be a string"),
    ],
)
def test_a_bad_prompt_file_is_refused_naming_the_flag(tmp_path, content, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    with pytest.raises(ConfigError) as info:
        resolve_prompt(str(bad), "Qwen/Qwen2.5-VL-3B-Instruct")
    assert message.format(bad) in str(info.value)
    assert str(info.value).startswith("--prompt-config")
    with pytest.raises(ConfigError, match="--prompt-config: file not found"):
        resolve_prompt(str(tmp_path / "missing.yaml"), "x")


# ----------------------------------------------------------------------------- eval paths
SAVED = {"system": "You locate things.", "templates": {"rec": "Locate: {question}. JSON only."}}


@pytest.fixture(scope="module")
def rec_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("prompt_eval")
    return write_shapes(out, n_train=0, n_eval=2, seed=3, image_size="112", tasks=["rec"])[
        "rec_eval_in"
    ]


@pytest.fixture()
def trained(tmp_path, tiny_path):
    """A model folder as a vlm-r1 run saves it: the checkpoint plus its prompt settings."""
    folder = tmp_path / "final"
    shutil.copytree(tiny_path("qwen2_5_vl"), folder)
    write_prompt_file(folder, SAVED)
    return folder


def test_hf_eval_asks_a_trained_model_with_its_saved_prompt(
    monkeypatch, tmp_path, trained, rec_data
):
    seen = []
    real_call = GreedyGenerator.__call__

    def spy(self, prompts):
        seen.extend(self.processor.tokenizer.decode(p.features["input_ids"][0]) for p in prompts)
        return real_call(self, prompts)

    monkeypatch.setattr(GreedyGenerator, "__call__", spy)
    metrics = evaluate_checkpoint(str(trained), str(rec_data), max_new_tokens=2, progress=False)
    assert metrics["_meta"]["prompt"] == str(trained / PROMPT_FILE)
    assert len(seen) == 2
    for text in seen:
        assert text.startswith("<|im_start|>system\nYou locate things.<|im_end|>")
        assert "Locate: Please provide the bounding box" in text and ". JSON only." in text
    # --prompt-config overrides what the folder saved ({}: VLM-R1's prompts).
    seen.clear()
    empty = tmp_path / "vlm_r1_defaults.yaml"
    empty.write_text("{}\n")
    metrics = evaluate_checkpoint(
        str(trained), str(rec_data), max_new_tokens=2, progress=False, prompt_config=empty
    )
    assert metrics["_meta"]["prompt"] == str(empty)
    assert all("You are a helpful assistant." in t and "Locate:" not in t for t in seen)


def test_vllm_eval_sends_the_saved_prompt(monkeypatch, trained, rec_data):
    requests = []

    class FakeLLM:
        def __init__(self, **kwargs):
            pass

        def generate(self, batch, sampling_params, use_tqdm):
            requests.extend(batch)
            return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=(1,))]) for _ in batch]

    vllm = SimpleNamespace(LLM=FakeLLM, SamplingParams=lambda **kw: SimpleNamespace(**kw))
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setattr("vlm_r1.eval.runner.cuda_device_count", lambda: 1)
    metrics = evaluate_checkpoint(str(trained), str(rec_data), backend="vllm", progress=False)
    assert metrics["_meta"]["prompt"] == str(trained / PROMPT_FILE)
    assert len(requests) == 2
    for request in requests:
        assert request["prompt"].startswith("<|im_start|>system\nYou locate things.<|im_end|>")
        assert "Locate: Please provide the bounding box" in request["prompt"]
