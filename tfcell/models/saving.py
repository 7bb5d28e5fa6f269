"""Loading `.keras` files that hold tfcell objects (`tfcell.models.load_model`).

What is and is not possible (checked in Keras 3.15,
`keras/src/saving/serialization_lib.py::_retrieve_class_or_fn`):

- A `.keras` file records, for every tfcell object, its `module`
  (`"tfcell.layers.gaussian_affinity"`) and its `registered_name`
  (`"tfcell>GaussianAffinity"`). Keras finds the class only in the
  `register_keras_serializable` registry, filled when `import tfcell` runs.
- Keras imports a missing object's module by itself only for the packages
  keras, keras_hub, keras_cv and keras_nlp. For any other package it raises
  `TypeError: Could not locate class 'GaussianAffinity'. Make sure custom
  classes ... are imported ... Full object config: {'module':
  'tfcell.layers.gaussian_affinity', ..., 'registered_name':
  'tfcell>GaussianAffinity', ...}`: the message names tfcell (module and
  registered name), but Keras offers no public hook (no per-package loader, no
  message callback) that could make it say "import tfcell" before tfcell is
  imported. So plain `keras.saving.load_model` without `import tfcell` fails
  with that message, and only that.
- `tfcell.models.load_model` (this module) cannot be reached without
  importing tfcell, so it always finds every tfcell class; it adds nothing
  else to `keras.saving.load_model`.
"""

import keras

__all__ = ["load_model"]


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """`keras.saving.load_model` with every tfcell loss, layer, model and
    trainer registered (as after `import tfcell`).

    Equivalent to `import tfcell; keras.saving.load_model(...)`; use it where
    the loading code would otherwise not import tfcell.

    Args:
        filepath: the `.keras` file.
        custom_objects: extra non-tfcell objects, as for Keras.
        compile: whether to compile the model with its saved loss/optimizer.
        safe_mode: Keras's safe mode (no lambda deserialization); stays on.

    Returns:
        The model.

    Example:

    ```python
    model = tfcell.models.load_model("workdir/cfal/model.keras")
    ```
    """
    return keras.saving.load_model(
        filepath, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
    )
