"""The multilabel export's endpoints: sigmoid probabilities, per-label thresholds in the graph.

  serving_default  text <string>[b] ->
    probabilities <float32>[b, C]  sigmoid of each label's logit, independent of the others;
    label_mask    <bool>[b, C]     probabilities >= the label's threshold (tuned on validation);
    labels        <string>[b, C]   the predicted label names in class order, left-aligned and
                                   padded with "" (a text with no label: C empty strings).
  classify         serialized tf.Example with `text` -> classes <string>[b, C] (every class
                   name), scores <float32>[b, C] (each label's probability), as TF Serving's
                   Classify expects.

The thresholds are in the SavedModel: a SavedModel served anywhere applies them. They are
a variable that the export also lists as the collection `label_thresholds`, so that
`read_thresholds` reads the very values the graph applies (the model card shows them).
"""

import numpy as np
import tensorflow as tf

from tfagent import signatures

PROBABILITIES = "probabilities"
LABEL_MASK = "label_mask"
LABELS = "labels"
OUTPUTS = (PROBABILITIES, LABEL_MASK, LABELS)
THRESHOLDS = "label_thresholds"  # The export's variable collection of the thresholds.


def make_serving_fns(model, class_names, thresholds) -> tuple:
  """`(serve, classify, cut)` of a multilabel export; `thresholds` `<float>[C]`, one a label,
  held by the variable `cut` (to add as the collection THRESHOLDS)."""
  names = tf.constant(list(class_names), tf.string)
  cut = tf.Variable(np.asarray(thresholds, np.float32).reshape([len(class_names)]),
                    trainable=False, name=THRESHOLDS)
  width = len(class_names)
  spec = signatures.input_spec(model)  # `text`, and `text_pair` for a sentence-pair model.

  @tf.function(input_signature=[spec])
  def serve(text):
    probabilities = tf.sigmoid(tf.cast(model(text, training=False), tf.float32))
    mask = probabilities >= cut
    tiled = tf.tile(names[tf.newaxis], [tf.shape(probabilities)[0], 1])
    labels = tf.ragged.boolean_mask(tiled, mask).to_tensor("", shape=[None, width])
    return {PROBABILITIES: probabilities, LABEL_MASK: mask, LABELS: labels}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name=signatures.CLASSIFY_INPUTS)])
  def classify(inputs):
    scores = serve(signatures.example_texts(inputs, spec))[PROBABILITIES]
    return {signatures.CLASSIFY_CLASSES: tf.tile(names[tf.newaxis], [tf.shape(scores)[0], 1]),
            signatures.CLASSIFY_SCORES: scores}
  return serve, classify, cut


def read_thresholds(loaded) -> list:
  """The per-label thresholds a loaded multilabel export applies; None for any other export."""
  collection = getattr(loaded, THRESHOLDS, None)
  return [float(t) for t in collection[0].numpy()] if collection else None
