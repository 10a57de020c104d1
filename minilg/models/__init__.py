"""Model families. Importing this package registers every variant with :mod:`minilg.registry`."""

from minilg.models import deit, focal, gg, hat_net, pvt, reach, salg, swin
from minilg.models.backbone import HierarchicalBackbone
from minilg.models.base import ModelBase
from minilg.models.isotropic import IsotropicBackbone
from minilg.models.stages import BlockSpec, BlockStages, Stage, StageSpec

__all__ = [
    "BlockSpec", "BlockStages", "HierarchicalBackbone", "IsotropicBackbone", "ModelBase", "Stage",
    "StageSpec", "deit", "focal", "gg", "hat_net", "pvt", "reach", "salg", "swin",
]
