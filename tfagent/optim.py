"""AdamW with a lower learning rate for a pretrained backbone than for the new head."""

import re

import keras

from tfagent import _compat


@keras.saving.register_keras_serializable(package="tfagent")
class TwoRateAdamW(keras.optimizers.Adam):
  """AdamW whose backbone variables step at `backbone_scale` times the rate.

  Fine-tuning a pretrained encoder wants a small rate (its weights already
  encode language) while the fresh head needs a large one. Both follow the
  same warm-up + decay schedule; decoupled weight decay is scaled the same way,
  so it is applied here, per variable at that variable's rate, rather than by
  Keras (which decays every variable at the one rate before the step).
  Call `set_backbone_variables` before the first step.
  """

  def __init__(self, learning_rate=1e-3, backbone_scale=1.0, weight_decay=0.004, **kwargs):
    super().__init__(learning_rate=learning_rate, weight_decay=None, **kwargs)
    self.decoupled_weight_decay = weight_decay
    self.backbone_scale = backbone_scale
    self._backbone_keys = set()
    self._no_decay_keys, self._no_decay_names = set(), None

  def set_backbone_variables(self, variables) -> None:
    self._backbone_keys = {_compat.optimizer_variable_key(self, v) for v in variables}

  def exclude_from_weight_decay(self, var_list=None, var_names=None) -> None:
    """Variables (or names matching any of `var_names`) that are never decayed."""
    self._no_decay_keys = {_compat.optimizer_variable_key(self, v) for v in var_list or ()}
    self._no_decay_names = re.compile("|".join(set(var_names))) if var_names else None

  def decays(self, variable) -> bool:
    """True when decoupled weight decay applies to `variable`."""
    if not self.decoupled_weight_decay:
      return False
    if _compat.optimizer_variable_key(self, variable) in self._no_decay_keys:
      return False
    return not (self._no_decay_names and self._no_decay_names.search(variable.name))

  def _scale(self, variable, learning_rate):
    if _compat.optimizer_variable_key(self, variable) in self._backbone_keys:
      return learning_rate * keras.ops.cast(self.backbone_scale, learning_rate.dtype)
    return learning_rate

  def update_step(self, gradient, variable, learning_rate):
    learning_rate = self._scale(variable, keras.ops.cast(learning_rate, variable.dtype))
    if self.decays(variable):
      variable.assign_sub(variable * keras.ops.cast(self.decoupled_weight_decay, variable.dtype)
                          * learning_rate)
    super().update_step(gradient, variable, learning_rate)

  def get_config(self):
    return {**super().get_config(), "weight_decay": self.decoupled_weight_decay,
            "backbone_scale": self.backbone_scale}
