"""tfcell losses: one file per family, each loss a registered `keras.losses.Loss`
with a per-sample snake_case function twin."""

from tfcell.losses.affinity import *
from tfcell.losses.alignment import *
from tfcell.losses.boda import *
from tfcell.losses.center import *
from tfcell.losses.class_balanced import *
from tfcell.losses.exclusive import *
from tfcell.losses.focal import *
from tfcell.losses.heterogeneity import *
from tfcell.losses.margin import *
from tfcell.losses.ssim import *
