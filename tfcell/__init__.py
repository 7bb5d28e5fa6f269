"""tfcell: Keras 3 losses, layers, trainers, data and reproductions for imbalanced,
domain-shifted microscopy image classification.

`import tfcell` registers every serializable loss, layer, model and trainer, so
`keras.saving.load_model(path)` works with `safe_mode` on.
"""

from tfcell import data, evaluation, layers, losses, models, training

__version__ = "0.1.0"
