"""minilg: local-global attention for vision transformers, implemented and measured.

    >>> import minilg
    >>> model = minilg.create_model("swin_tiny")
    >>> minilg.complexity.model_macs(model, 224)  # exact MACs, one 224x224 image

Sub-packages: :mod:`minilg.attention` (the mechanisms), :mod:`minilg.models` (backbones and
registered variants), :mod:`minilg.complexity` (MAC counting), ``minilg.data`` and
``minilg.train`` (ImageNet subsets and training; imported on demand).
"""

from minilg import attention, complexity, models
from minilg.registry import create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["attention", "complexity", "create_model", "list_models", "models", "register_model"]
