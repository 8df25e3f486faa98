"""Where practitioners already train: kdsl specs inside Hugging Face's ``Trainer``
(:mod:`kdsl.integrations.hf`) and PyTorch Lightning (:mod:`kdsl.integrations.lightning`).

Each module imports its framework only when used (``import kdsl`` and ``kdsl check`` import none);
both run a spec's step through :class:`kdsl.integrations.spec_step.SpecStep`.
"""
