"""Training: start-up checks (startup), the Trainer (trainer), schedule, DeepSpeed set-up,
checkpoints, metrics, the step module."""
