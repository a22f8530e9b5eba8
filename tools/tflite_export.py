"""Keras model -> float32 TFLite bytes with a dynamic batch dimension, an
input named "image" and an output named "probabilities" in the signature."""

from __future__ import annotations

import tempfile


def to_tflite(model, input_shape: tuple[int, ...]) -> bytes:
    import tensorflow as tf

    # Keras 3's own SavedModel export carries the trained variables (tracking a
    # Keras 3 model from a bare tf.Module does not: the converter then sees
    # uninitialised weights).
    with tempfile.TemporaryDirectory() as d:
        export = tf.keras.export.ExportArchive()
        export.track(model)
        export.add_endpoint(
            name="serving_default",
            fn=lambda image: {"probabilities": model(image, training=False)},
            input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name="image")],
        )
        export.write_out(d)
        return tf.lite.TFLiteConverter.from_saved_model(d).convert()
