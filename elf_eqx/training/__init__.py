"""Training: run config, setup, the jitted step, optimizer and schedule, checkpoints, metrics log."""
