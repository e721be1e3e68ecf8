"""The FlexUNet network: the original TensorFlowFlexUNet, layer for layer, in Keras 3.

For levels ``i = 0 .. num_layers-1`` (the last is the bridge):

1. filters ``f_i = base_filters * 2**i`` (capped by ``max_filters`` when set);
2. kernel ``k_i = max(3, base_kernels - 2*i)`` and dilation ``d_i = max(1, dilation - i)``;
3. encoder block: Conv(f_i, k_i) [BN] Dropout(dropout_rate*i) Conv(f_i, k_i) [BN], then
   MaxPool 2x2 except at the bridge;
4. decoder block for ``i = num_layers-2 .. 0``: Conv2DTranspose(f_i, 2x2, stride 2), concat
   with the encoder's level-i output, then the same two convolutions as the encoder's level i;
5. head: 1x1 convolution to num_classes, softmax (in float32, also under mixed precision; so are the
   losses and metrics, which cast to float32, and BatchNorm, whose variables and statistics Keras
   keeps in float32 under a mixed policy).

Before level 0: ``input_normalize`` scales 0..255 to 0..1, and ``centre_intensity`` (off in the
original; on in the configs ``flexunet plan`` writes) subtracts each image's own mean mid-grey
(:class:`CentreIntensity`, computed in float32), so a scanner's calibration offset cancels.

With the stroke config (16 filters, 9x9 kernels, 8 levels, 512x512x3, 3 classes) this is
124,996,883 parameters (125,045,779 with ``normalization = True``), as the original.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass

import keras
from keras import layers, ops

from flexunet.config.loader import Config, ModelSettings
from flexunet.model.precision import policy_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Level:
    """The shape of one level of the U: filters, kernel, dilation, dropout."""

    index: int
    filters: int
    kernel: int
    dilation: int
    dropout: float


def levels(m: ModelSettings) -> list[Level]:
    """The per-level schedule the settings describe (encoder order; the decoder reverses it)."""
    out = []
    for i in range(m.num_layers):
        filters = m.base_filters * 2 ** i
        if m.max_filters is not None:
            filters = min(filters, m.max_filters)
        out.append(Level(i, filters, max(3, m.base_kernels[0] - 2 * i), max(1, m.dilation[0] - i),
                         m.dropout_rate * i))
    return out


def _conv(level: Level, m: ModelSettings, name: str) -> layers.Layer:
    return layers.Conv2D(level.filters, level.kernel, padding="same", activation=m.activation,
                         kernel_initializer="he_normal", dilation_rate=level.dilation, name=name)


# BatchNorm's moving statistics follow the batches with momentum 0.9 (PyTorch's default, nnU-Net's), not
# Keras' 0.99: a CPU run of a few hundred steps otherwise validates with statistics that lag the
# weights by ~100 steps, and its validation Dice swings from epoch to epoch.
BN_MOMENTUM = 0.9


def _block(x, level: Level, m: ModelSettings, prefix: str, seed: int | None):
    x = _conv(level, m, f"{prefix}{level.index}_conv1")(x)
    if m.normalization:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}{level.index}_bn1")(x)
    x = layers.Dropout(level.dropout, seed=None if seed is None else seed + level.index,
                       name=f"{prefix}{level.index}_dropout")(x)
    x = _conv(level, m, f"{prefix}{level.index}_conv2")(x)
    if m.normalization:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}{level.index}_bn2")(x)
    return x


@keras.saving.register_keras_serializable(package="flexunet")
class CentreIntensity(layers.Layer):
    """Each channel of an image minus its mean over the image's mid-grey pixels (those whose grey, the
    channels' mean, is within 5-95% of ``scale``).

    In a brain window the mid-grey pixels are the brain: air and background sit at 0, bone at the
    top. An offset added to the brain's grey (one scanner's calibration against another's) moves
    the mean by the same amount and cancels, in each channel on its own (``three_windows`` shows
    one HU offset as three different grey offsets); an image with no mid-grey pixel is left as it is.
    Registered with Keras (package ``flexunet``): a ``.keras`` file holding it loads where
    ``flexunet`` is imported; the SavedModel and ONNX exports need no FlexUNet.
    """

    def __init__(self, scale: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, x):
        grey = ops.mean(x, axis=-1, keepdims=True)
        inside = ops.cast((grey > 0.05 * self.scale) & (grey < 0.95 * self.scale), x.dtype)
        count = ops.sum(inside, axis=(1, 2), keepdims=True)
        mean = ops.sum(x * inside, axis=(1, 2), keepdims=True) / ops.maximum(count, 1.0)   # per channel
        return x - mean

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def build_model(m: ModelSettings, seed: int | None = None, name: str = "FlexUNet") -> keras.Model:
    """Build the network the [model] settings describe (not compiled).

    ``seed`` fixes the dropout layers when ``dropout_seed_fixing`` is set; weight
    initialisation follows ``keras.utils.set_random_seed`` (the training stage sets it).
    With ``members = K > 1`` the network is K of the U side by side on the one input, their layers
    named ``m1_`` .. ``mK_`` + the single network's names, and its output the mean of their softmax
    outputs (:func:`combine_members` fills it from K separately trained networks).
    """
    drop_seed = seed if m.dropout_seed_fixing else None
    inputs = keras.Input((m.image_height, m.image_width, m.image_channels), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="input_normalize")(inputs) if m.input_normalize else inputs
    if m.centre_intensity:
        x = CentreIntensity(1.0 if m.input_normalize else 255.0, dtype="float32", name="centre_intensity")(x)
    if m.members == 1:
        return keras.Model(inputs, _unet(x, m, "", drop_seed), name=name)
    outputs = [_unet(x, m, f"m{k}_", None if drop_seed is None else drop_seed + k - 1)
               for k in range(1, m.members + 1)]
    return keras.Model(inputs, layers.Average(dtype="float32", name="softmax")(outputs), name=name)


def _unet(x, m: ModelSettings, prefix: str, drop_seed: int | None):
    """One U from the (normalised) input to its softmax; every layer's name starts with ``prefix``."""
    schedule = levels(m)
    skips = []
    for level in schedule:
        x = _block(x, level, m, f"{prefix}enc", drop_seed)
        if level.index < m.num_layers - 1:
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"{prefix}enc{level.index}_pool")(x)

    for level in reversed(schedule[:-1]):
        x = layers.Conv2DTranspose(level.filters, 2, strides=2, padding="same",
                                   kernel_initializer="he_normal", name=f"{prefix}dec{level.index}_up")(x)
        x = layers.Concatenate(name=f"{prefix}dec{level.index}_concat")([x, skips[level.index]])
        x = _block(x, level, m, f"{prefix}dec", drop_seed)

    x = layers.Conv2D(m.num_classes, 1, padding="same", name=f"{prefix}head")(x)
    return layers.Activation("softmax", dtype="float32", name=f"{prefix}softmax")(x)


def combine_members(m: ModelSettings, members: list[keras.Model]) -> keras.Model:
    """The ``members = len(members)`` network of ``m`` holding each single network's weights in its
    ``m<k>_`` layers: its output is the mean of theirs.  ``members``: networks of ``m`` with ``members = 1``."""
    combined = build_model(dataclasses.replace(m, members=len(members)))
    for k, member in enumerate(members, start=1):
        for layer in member.layers:
            if layer.weights:
                combined.get_layer(f"m{k}_{layer.name}").set_weights(layer.get_weights())
    return combined


def forward_flops(model: keras.Model) -> int:
    """Floating-point operations of one forward pass for one image (2 per multiply-add).

    Counts convolutions, transposed convolutions and the head, which are all but a
    fraction of a percent of the work; pooling, activations and BN are left out.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2DTranspose):
            _, h, w, cin = layer.input.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * cin * layer.filters
        elif isinstance(layer, layers.Conv2D):
            _, h, w, _ = layer.output.shape
            cin = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * cin * layer.filters
    return int(total)


def summary_text(model: keras.Model, m: ModelSettings) -> str:
    """Layer summary, level schedule, parameter count and forward GFLOPs, as text."""
    buf = io.StringIO()
    model.summary(print_fn=lambda line, **_: buf.write(line + "\n"), line_length=110)
    lines = [buf.getvalue().rstrip(), "", "Level schedule (encoder; the decoder mirrors it):",
             "  level  filters  kernel  dilation  dropout"]
    for lv in levels(m):
        lines.append(f"  {lv.index:>5}  {lv.filters:>7}  {lv.kernel:>4}x{lv.kernel:<1}  {lv.dilation:>8}  "
                     f"{lv.dropout:>7.3f}")
    flops = forward_flops(model)
    lines += ["",
              f"Input: {m.image_height}x{m.image_width}x{m.image_channels}   classes: {m.num_classes}",
              f"Parameters: {model.count_params():,}",
              f"Forward GFLOPs per image: {flops / 1e9:.2f}  (training ~3x: {3 * flops / 1e9:.2f})"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the model as training starts it


def configure_runtime(cfg: Config) -> None:
    """Seeds, determinism and precision policy; call before building the model."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # the switch is process-wide: a previous deterministic run must not leak into this one
        from tensorflow.python.framework.config import disable_op_determinism

        disable_op_determinism()
    # "auto" not yet resolved (autotune.resolve): float32
    keras.mixed_precision.set_global_policy(policy_name(cfg.train.mixed_precision))


def make_optimizer(cfg: Config):
    import keras

    m = cfg.model
    kwargs = {"learning_rate": m.learning_rate}
    if m.clipvalue is not None:
        kwargs["clipvalue"] = m.clipvalue
    if cfg.train.ema > 0:  # Polyak averaging; training.train swaps the averages in to validate and save
        kwargs.update(use_ema=True, ema_momentum=cfg.train.ema)
    name = m.optimizer.lower()
    table = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
             "rmsprop": keras.optimizers.RMSprop}
    return table[name](**kwargs)


def compile_model(cfg: Config):
    """Build and compile the configured model (call inside the strategy scope)."""
    from flexunet.model.losses import make_loss, make_metrics

    model = build_model(cfg.model, seed=cfg.train.seed)
    model.compile(optimizer=make_optimizer(cfg), loss=make_loss(cfg), metrics=make_metrics(cfg),
                  jit_compile=cfg.train.jit_compile)
    if cfg.model.show_summary:
        model.summary()
    return model


def prior_bias(model, pixels) -> list[float]:
    """Set the output layer's bias to log(share of each class's training pixels) (floored at 1e-6).

    At the first step the softmax then predicts about the class frequencies (RetinaNet's prior
    initialisation) instead of 1/num_classes everywhere, which the Dice term would first have to
    undo over several epochs of over-predicted lesions.  Returns the bias set.
    """
    import numpy as np

    pixels = np.asarray(pixels, dtype=np.float64)
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    share = pixels / max(pixels.sum(), 1.0)
    bias = np.log(np.maximum(share, 1e-6)).astype(bias.dtype)
    head.set_weights([kernel, bias])
    log.info("output bias from the training pixel shares (%s): %s",
             ", ".join(f"{s:.3%}" for s in share), ", ".join(f"{b:.2f}" for b in bias))
    return [float(b) for b in bias]
