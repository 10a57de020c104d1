"""Model families. Importing this package registers every variant with :mod:`minilg.registry`."""

from minilg.models import deit, focal, gg, hat_net, pvt, salg, swin
from minilg.models.backbone import BlockSpec, HierarchicalBackbone, IsotropicBackbone, ModelBase

__all__ = [
    "BlockSpec", "HierarchicalBackbone", "IsotropicBackbone", "ModelBase", "deit", "focal", "gg",
    "hat_net", "pvt", "salg", "swin",
]
