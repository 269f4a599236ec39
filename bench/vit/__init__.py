"""What a trained ViT learned: patch filters, position-embedding similarity, attention distance."""
