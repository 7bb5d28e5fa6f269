"""tfcell losses: one file per family, each loss a registered `keras.losses.Loss`
with a per-sample snake_case function twin.

`tfcell.losses.get("cfal", margin=0.1)` builds a loss from its short name (the
table is `tfcell.losses._registry.LOSSES`), its class name or a config, and
falls back to `keras.losses.get` for Keras's own losses.
"""

from tfcell.losses import _registry, detection
from tfcell.losses._registry import get
from tfcell.losses.affinity import *
from tfcell.losses.alignment import *
from tfcell.losses.boda import *
from tfcell.losses.center import *
from tfcell.losses.class_balanced import *
from tfcell.losses.detection import *
from tfcell.losses.exclusive import *
from tfcell.losses.focal import *
from tfcell.losses.heterogeneity import *
from tfcell.losses.margin import *
from tfcell.losses.ssim import *

# DetectionLoss joins the short-name table here ("detection", "DetectionLoss").
_registry.LOSSES["detection"] = detection.DetectionLoss
_registry._BY_CLASS_NAME["DetectionLoss"] = detection.DetectionLoss
