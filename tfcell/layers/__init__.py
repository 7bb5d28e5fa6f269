"""tfcell layers: heads that hold class prototypes, centres and reversal."""

from tfcell.layers.centers import *
from tfcell.layers.cosine_head import *
from tfcell.layers.gaussian_affinity import *
from tfcell.layers.gradient_reversal import *
