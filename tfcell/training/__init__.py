"""tfcell training: distribution strategy, trainers (Keras Models with a custom
`train_step`) and callbacks."""

from tfcell.training.aecfe import *
from tfcell.training.alignment import *
from tfcell.training.boda import *
from tfcell.training.callbacks import *
from tfcell.training.dann import *
from tfcell.training.erm import *
from tfcell.training.heterogeneity import *
from tfcell.training.loop import *
from tfcell.training.strategy import *
