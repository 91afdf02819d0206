"""Ensembles: copies of one architecture trained side by side, their probabilities averaged.

Member k starts from its own initial weights and, in training, reads its own
shuffled stream of batches (data.make_input_fn with `members`), so it ends up
as a separately trained model would. One step trains all members: the loss is
the mean of their cross-entropies and they share no weights, so each member's
gradient is that of its own loss (scaled by 1/size, which Adam's normalisation
cancels). Averaging the members' probabilities is what lifts accuracy over one
member (README, "Quickstart accuracy").
"""

import keras

from tfagent.errors import ConfigError

MEMBER_AXIS = 1  # Classifier output: <float32>[batch, size, num_classes] member logits.


def build_ensemble(builder, cfg, num_classes: int, size: int) -> keras.Model:
  """`size` members from `builder(cfg, num_classes, name=...)`, one input each.

  Returns:
    keras.Model `[<int>[batch, len_k]] * size -> <float32>[batch, size, num_classes]`,
    named `classifier`; members are `member_0` ... `member_{size-1}`. Trained
    with labels `<int32>[batch, size]` and sparse cross-entropy, which then
    averages the members' losses (and "accuracy" their accuracies).
  """
  ids = [keras.Input(shape=(None,), dtype="int64", name=f"token_ids_{k}") for k in range(size)]
  logits = [builder(cfg, num_classes, name=f"member_{k}")(ids[k]) for k in range(size)]
  return keras.Model(ids, keras.ops.stack(logits, axis=MEMBER_AXIS), name="classifier")


@keras.saving.register_keras_serializable(package="tfagent")
class MemberAverage(keras.layers.Layer):
  """`<float>[batch, size, C]` member logits to `<float32>[batch, C]` ensemble logits.

  The output is log(mean_k softmax(logits_k)), so its softmax is the mean of
  the members' probabilities.
  """

  def call(self, member_logits):
    log_probs = keras.ops.log_softmax(keras.ops.cast(member_logits, "float32"), axis=-1)
    size = keras.ops.cast(keras.ops.shape(log_probs)[MEMBER_AXIS], "float32")
    return keras.ops.logsumexp(log_probs, axis=MEMBER_AXIS) - keras.ops.log(size)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], input_shape[-1])


def check_size(size: int, model_name: str, pretrained: bool) -> None:
  """Fails with the reason when `size` members of `model_name` cannot be built."""
  if size < 1:
    raise ConfigError(f"--ensemble_size={size} is invalid; expected 1 (one model) or more.")
  if size > 1 and pretrained:
    raise ConfigError(f"--ensemble_size={size} is not supported with --model={model_name} "
                      "(a pretrained encoder is fine-tuned alone); use --ensemble_size=1.")
