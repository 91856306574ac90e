"""Training reports: metric plots, the evaluation table, rollouts with boxes drawn."""
