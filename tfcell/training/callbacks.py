"""Callbacks that feed the training loop's state to losses (epoch-annealed ECE)."""

import keras

__all__ = ["EpochVariableCallback"]


class EpochVariableCallback(keras.callbacks.Callback):
    """Writes the current epoch into a loss's `epoch` variable at each epoch start.

    Losses whose schedule depends on the epoch (`ExclusiveCrossentropyLoss`'s
    two annealed thresholds) hold the epoch in a non-trainable
    `keras.Variable`; the compiled train step reads it, so assigning it
    here changes the loss without retracing. The epoch written is the
    absolute one that `fit` reports (it includes `initial_epoch`).

    Args:
        target: an object with an `epoch` `keras.Variable` (a loss), a
            `keras.Variable` itself, or None to use `model.loss` (the
            compiled loss, or every value of a dict/list of losses that has
            an `epoch` variable).

    Example:
    ```python
    loss = tfcell.losses.ExclusiveCrossentropyLoss()
    model.compile(optimizer="adam", loss=loss)
    model.fit(ds, epochs=300, callbacks=[tfcell.training.EpochVariableCallback(loss)])
    ```
    """

    def __init__(self, target=None):
        super().__init__()
        self.target = target

    def _variables(self):
        if self.target is not None:
            candidates = [self.target]
        else:
            loss = getattr(self.model, "loss", None)
            if isinstance(loss, dict):
                candidates = list(loss.values())
            elif isinstance(loss, (list, tuple)):
                candidates = list(loss)
            else:
                candidates = [loss]
        variables = []
        for candidate in candidates:
            if isinstance(candidate, keras.Variable):
                variables.append(candidate)
            elif isinstance(getattr(candidate, "epoch", None), keras.Variable):
                variables.append(candidate.epoch)
        if not variables:
            raise ValueError(
                "EpochVariableCallback found no epoch variable: pass a loss with an "
                "`epoch` keras.Variable (e.g. ExclusiveCrossentropyLoss) or the "
                f"variable itself; received target={self.target!r}."
            )
        return variables

    def on_epoch_begin(self, epoch, logs=None):
        for variable in self._variables():
            variable.assign(float(epoch))
