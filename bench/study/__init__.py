"""Many experiments: a sweep YAML expanded to cells, run locally, on SLURM or on W&B; records pulled back."""
