"""Reading files the spec or a flag names: checkpoints and model weights, defensively and
``weights_only``."""
