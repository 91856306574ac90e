"""GRPO: rollouts, advantages, losses, log-probs, sampling, monitors and the training loop."""
