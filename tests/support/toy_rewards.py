"""Toy rewards with a learnable signal for an untrained tiny model (used by trainer tests)."""


def digit_fraction(completions, solutions, **ctx):
    """Fraction of non-space characters that are digits: random text scores low, a policy can
    raise it quickly, and groups always have reward variance."""
    out = []
    for text in completions:
        chars = [c for c in text if not c.isspace()]
        out.append(sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0)
    return out
