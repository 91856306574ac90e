"""What every recipe (GRPO, SFT, evaluation) does with a policy model, whatever the algorithm:
turn a sample into the model's prompt inputs, score completions token by token (plain, or
sharing one prompt prefix and one image encoding across a group), and hand out prompts to
processes in a seeded, resumable order. Imports models and data, never a recipe."""
