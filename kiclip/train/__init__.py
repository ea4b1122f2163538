"""Training components: schedule, DeepSpeed set-up, checkpoints, metrics, the step module."""
