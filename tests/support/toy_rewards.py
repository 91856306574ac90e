"""Toy rewards with a learnable signal for an untrained tiny model (used by trainer tests)."""


def digit_fraction(completions, solutions, **ctx):
    """Fraction of non-space characters that are digits: random text scores low, a policy can
    raise it quickly, and groups always have reward variance."""
    out = []
    for text in completions:
        chars = [c for c in text if not c.isspace()]
        out.append(sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0)
    return out


def sigterm_once(completions, solutions, **ctx):
    """Send this process SIGTERM on the first call (as a scheduler would), then score 0: the
    step finishes, a checkpoint is written and the command exits with 143."""
    import os
    import signal

    if not getattr(sigterm_once, "sent", False):
        sigterm_once.sent = True
        os.kill(os.getpid(), signal.SIGTERM)
    return [0.0] * len(completions)
