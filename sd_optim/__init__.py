"""sd-optim: find the best merge of Stable Diffusion checkpoints with sd-mecha and Optuna."""

__version__ = "0.1.0"
