"""Chat templates (Jinja) for the tiny checkpoints, equivalent to the families' own.

Real hub checkpoints ship their own template; these are only used by the tiny builders so that
tiny models format prompts exactly the way the real ones do (ChatML with vision placeholders).
"""

from __future__ import annotations


def chatml(image: str, video: str, default_system: str | None) -> str:
    """A ChatML template; ``image``/``video`` are the placeholder strings an image/video becomes."""
    system = (
        "{% if messages[0]['role'] != 'system' %}"
        "<|im_start|>system\n" + default_system + "<|im_end|>\n"
        "{% endif %}"
        if default_system
        else ""
    )
    return (
        system + "{% for message in messages %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}" + image + ""
        "{% elif part['type'] == 'video' %}" + video + ""
        "{% elif part['type'] == 'text' %}{{ part['text'] }}"
        "{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def gemma3_template() -> str:
    """Gemma 3's chat format (``google/gemma-3-4b-it``, ``chat_template`` in its tokenizer
    config): ``<bos>``, then ``<start_of_turn>{user|model}\\n ... <end_of_turn>\\n`` turns that
    must alternate user/model. There is no system turn: a leading system message's text plus a
    blank line opens the first user turn. An image part is ``<start_of_image>``, which the
    processor expands to its soft tokens; text parts are stripped of surrounding whitespace."""
    return (
        "{{ bos_token }}"
        "{% set ns = namespace(prefix='', turns=messages) %}"
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set sys = messages[0]['content'] %}"
        "{% set ns.prefix = (sys if sys is string else sys[0]['text']) ~ '\\n\\n' %}"
        "{% set ns.turns = messages[1:] %}"
        "{% endif %}"
        "{% for turn in ns.turns %}"
        "{% if (turn['role'] == 'user') != (loop.index0 is even) %}"
        "{{ raise_exception('Gemma 3 turns must alternate user/assistant, starting with user') }}"
        "{% endif %}"
        "<start_of_turn>{{ 'model' if turn['role'] == 'assistant' else turn['role'] }}\n"
        "{% if loop.first %}{{ ns.prefix }}{% endif %}"
        "{% if turn['content'] is string %}{{ turn['content'] | trim }}"
        "{% else %}{% for part in turn['content'] %}"
        "{% if part['type'] == 'image' %}<start_of_image>"
        "{% elif part['type'] == 'text' %}{{ part['text'] | trim }}"
        "{% endif %}{% endfor %}{% endif %}"
        "<end_of_turn>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
