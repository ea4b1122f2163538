"""Dataset tooling: videos and lists → WebDataset shards, synthetic data, B2N splits."""
