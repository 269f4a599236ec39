"""bench: scaling studies of Vision Transformers against ResNets."""

__version__ = "0.1.0"
