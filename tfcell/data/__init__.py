"""tfcell data: readers for each public layout, splits, augmentation, samplers,
tf.data pipelines, sharded TFRecords, the tf.data service and embedded synthetic
data."""

from tfcell.data import paths, records, service
from tfcell.data.augmentation import *
from tfcell.data.cache import *
from tfcell.data.cnmc import *
from tfcell.data.download import *
from tfcell.data.idc import *
from tfcell.data.image_io import *
from tfcell.data.kather import *
from tfcell.data.medmnist import *
from tfcell.data.model_augmentation import *
from tfcell.data.nuclei import *
from tfcell.data.pipeline import *
from tfcell.data.samplers import *
from tfcell.data.splits import *
from tfcell.data.synthetic import *
from tfcell.data.tfrecords import *
from tfcell.data.wbc import *
