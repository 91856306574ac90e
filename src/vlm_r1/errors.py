"""The one base class of errors a user causes and can fix (bad config, data, path, flag).

The command line prints these as one red line and exits with code 2. Anything else (a bug here
or in torch/transformers) keeps its traceback, so real defects are never disguised as input
mistakes. Each subclass also derives from ``ValueError`` or ``OSError`` where callers already
catch those.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """A problem with the user's input; the message names the key, file or value to fix."""


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT stopped training after a checkpoint was written.

    Raised once everything is saved, so the command exits with ``128 + signum`` (143 for
    SIGTERM, 130 for SIGINT), which job schedulers read as "stopped, not finished".
    """

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by signal {signum} at step {step}; checkpoint saved")
        self.signum = signum
        self.step = step
