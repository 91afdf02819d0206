"""AdamW with a lower learning rate for a pretrained backbone than for the new head."""

import keras


@keras.saving.register_keras_serializable(package="tfagent")
class TwoRateAdamW(keras.optimizers.AdamW):
  """AdamW whose backbone variables step at `backbone_scale` times the rate.

  Fine-tuning a pretrained encoder wants a small rate (its weights already
  encode language) while the fresh head needs a large one. Both follow the
  same warm-up + decay schedule; decoupled weight decay is scaled the same way.
  Call `set_backbone_variables` before the first step.
  """

  def __init__(self, learning_rate=1e-3, backbone_scale=1.0, **kwargs):
    super().__init__(learning_rate=learning_rate, **kwargs)
    self.backbone_scale = backbone_scale
    self._backbone_keys = set()

  def set_backbone_variables(self, variables) -> None:
    self._backbone_keys = {self._var_key(v) for v in variables}

  def _scale(self, variable, learning_rate):
    if self._var_key(variable) in self._backbone_keys:
      return learning_rate * keras.ops.cast(self.backbone_scale, learning_rate.dtype)
    return learning_rate

  def update_step(self, gradient, variable, learning_rate):
    learning_rate = self._scale(variable, keras.ops.cast(learning_rate, variable.dtype))
    if self.weight_decay and self._use_weight_decay(variable):
      variable.assign_sub(variable * keras.ops.cast(self.weight_decay, variable.dtype)
                          * learning_rate)
    super().update_step(gradient, variable, learning_rate)

  def _apply_weight_decay(self, variables):
    pass  # Done per variable in update_step, at that variable's rate.

  def get_config(self):
    return {**super().get_config(), "backbone_scale": self.backbone_scale}
