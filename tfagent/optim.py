"""The optimizer and its schedule, and the run's precision.

AdamW with a lower learning rate for a pretrained backbone than for the new head, on a
warm-up + cosine schedule; `precision_policy` sets Keras' dtype policy for a run.
"""

import contextlib
import re

import keras

from tfagent import _compat, config
from tfagent.callbacks import config_error

# --mixed_precision -> Keras dtype policy: variables stay float32 in all three.
PRECISION_POLICIES = dict(zip(config.PRECISIONS, ("float32", "mixed_bfloat16", "mixed_float16")))


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


def make_schedule(train_cfg, total_steps: int):
  """Linear warm-up to `learning_rate`, then cosine decay to zero at the last step."""
  warmup = max(1, int(train_cfg.warmup_fraction * total_steps))
  return keras.optimizers.schedules.CosineDecay(
      0.0, max(1, total_steps - warmup), warmup_target=train_cfg.learning_rate,
      warmup_steps=warmup)


def make_optimizer(train_cfg, total_steps: int, backbone=None) -> keras.optimizers.Optimizer:
  """AdamW on the warm-up + cosine schedule; a pretrained `backbone` gets its own peak rate."""
  optimizer = TwoRateAdamW(
      make_schedule(train_cfg, total_steps), weight_decay=train_cfg.weight_decay,
      backbone_scale=train_cfg.backbone_learning_rate / train_cfg.learning_rate)
  optimizer.set_backbone_variables(backbone.trainable_variables if backbone else [])
  # Decaying biases and normalisation scales only hurts; the usual exclusion.
  optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
  return optimizer


@contextlib.contextmanager
def precision_policy(name: str):
  """Sets Keras' global dtype policy for the run; logits and loss stay float32."""
  if name not in PRECISION_POLICIES:
    raise config_error("mixed_precision", name, " or ".join(PRECISION_POLICIES))
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(PRECISION_POLICIES[name])
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)
