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
