"""The one road of an image and its mask into the model: decode, resize, channels; the tf.data pipeline."""
