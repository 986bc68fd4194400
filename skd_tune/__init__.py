"""skd-tune: distributed hyperparameter search for Subclass Knowledge Distillation (Ray Tune + Optuna)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
