"""scl-lle: low-light image enhancement with Semantically Contrastive Learning (SCL-LLE)."""

__version__ = "0.1.0"
