"""The train_eval_infer.config dialect, parsed safely into frozen, typed settings.

The dialect is the original TensorFlow-FlexUNet's: INI sections, case-insensitive keys,
full-line ``;`` and ``#`` comments, and values written as Python literals::

    [model]
    base_kernels = (9,9)
    rgb_map      = {(0,0,0):0, (0,255,0):1, (0,0,255):2}

Values go through :func:`ast.literal_eval` only; nothing in a config is ever executed.
Every value is checked against the kind its key expects, and a bad one raises a
:class:`~flexunet.utils.errors.ConfigError` naming ``file:line [section] key = value`` and
what was expected.  Unknown keys and sections are warnings with a "did you mean".
Relative paths resolve against the config file's folder (``--set`` paths against the
current directory, as any command-line path).  The kinds live in ``config_values``, the
settings classes in ``settings``, the INI text is split into raw values in ``ini``; this
module builds the settings, checks across keys and writes back.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from flexunet.config.colours import default_rgb_map
from flexunet.config.ini import Raw, did_you_mean, read_ini, section_keys, split_override
from flexunet.config.settings import (REQUIRED, SECTIONS, AugmentorSettings, BarrDistortionSettings,  # noqa: F401
                                      BrighteningSettings, DatasetSettings, DeformationSettings, DistortionSettings,
                                      EvalSettings, GeneratorSettings, ImageSettings, InferSettings, IntensitySettings,
                                      MaskSettings, ModelSettings, PincDistortionSettings, PrepareSettings,
                                      ReportSettings, SharpeningSettings, SplitSettings, SubsetSettings,
                                      TiledInferSettings, TrainSettings)
from flexunet.config.values import Expected, format_value, literal
from flexunet.utils.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Where a value came from, for messages."""

    source: str          # the config file as given, or "--set"
    line: int | None
    raw: str

    def where(self, section: str, key: str) -> str:
        loc = f"{self.source}:{self.line}" if self.line is not None else self.source
        raw = " ".join(self.raw.splitlines())  # a multi-line value, on the message's one line
        return f"{loc} [{section}] {key} = {raw}"


@dataclass(frozen=True)
class Config:
    """A whole config: one frozen settings object per section."""

    path: Path | None = field(compare=False)
    model: ModelSettings
    dataset: DatasetSettings
    train: TrainSettings
    valid: SubsetSettings
    test: SubsetSettings
    infer: InferSettings
    eval: EvalSettings
    image: ImageSettings
    mask: MaskSettings
    tiledinfer: TiledInferSettings
    generator: GeneratorSettings
    augmentor: AugmentorSettings
    deformation: DeformationSettings
    distortion: DistortionSettings
    sharpening: SharpeningSettings
    brightening: BrighteningSettings
    intensity: IntensitySettings
    barrdistortion: BarrDistortionSettings
    pincdistortion: PincDistortionSettings
    prepare: PrepareSettings
    split: SplitSettings
    report: ReportSettings
    origins: Mapping[tuple[str, str], Origin] = field(default_factory=dict, compare=False, repr=False)
    warnings: tuple[str, ...] = field(default=(), compare=False, repr=False)
    source: str = field(default="<config>", compare=False, repr=False)

    # -- messages -----------------------------------------------------------------
    def where(self, section: str, key: str) -> str:
        origin = self.origins.get((section, key))
        if origin is not None:
            return origin.where(section, key)
        value = getattr(getattr(self, section), key)
        return f"{self.source} [{section}] {key} = {format_value(value)} (default)"

    def error(self, section: str, key: str, expected: str) -> ConfigError:
        """A ConfigError about one key, in the file:line [section] key = value form."""
        return ConfigError(f"{self.where(section, key)}: expected {expected}")

    def require(self, section: str, key: str, expected: str = "a value") -> Any:
        """The value of a key a command needs; a clear error if it is not set."""
        value = getattr(getattr(self, section), key)
        if value is None:
            raise ConfigError(f"{self.source} [{section}] {key}: missing; expected {expected}")
        return value

    def require_dir(self, section: str, key: str, what: str = "folder") -> Path:
        """An existing folder a command reads from."""
        path = self.require(section, key, f"the path of an existing {what}")
        if not Path(path).is_dir():
            raise self.error(section, key, f"an existing {what} ({path} does not exist)")
        return Path(path)

    # -- derived --------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.dataset.class_names
        if names is not None:
            return tuple(names)
        return tuple("background" if i == 0 else f"class_{i}" for i in range(self.model.num_classes))

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()

    def replace(self, section: str, **changes: Any) -> "Config":
        """A copy with some values of one section changed (already typed)."""
        new_section = dataclasses.replace(getattr(self, section), **changes)
        cfg = dataclasses.replace(self, **{section: new_section})
        _validate(cfg)
        return cfg


# --------------------------------------------------------------------------- reading


def _build(raw: dict[str, dict[str, Raw]], source: str, base: Path) -> tuple[dict[str, Any], dict, list[str]]:
    warnings: list[str] = []
    origins: dict[tuple[str, str], Origin] = {}
    built: dict[str, Any] = {}
    for name in raw:
        if name not in SECTIONS:
            warnings.append(f"{source}: unknown section [{name}] ignored{did_you_mean(name, SECTIONS)}")
    for name, cls in SECTIONS.items():
        accepted = section_keys(cls)
        kinds = {f.name: f.metadata["kind"] for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, item in raw.get(name, {}).items():
            if key not in accepted:
                others = [s for s, c in SECTIONS.items() if key in section_keys(c)]
                hint = "" if others else did_you_mean(key, accepted)
                if not hint:
                    hint = f"; '{key}' belongs in [{others[0]}]" if others else ""
                loc = f"{item.source}:{item.line}" if item.line is not None else item.source
                warnings.append(f"{loc} [{name}] unknown key '{key}' ignored{hint}")
                continue
            field_name = accepted[key]
            origin = Origin(item.source, item.line, item.text)
            origins[(name, field_name)] = origin
            try:
                values[field_name] = kinds[field_name](literal(item.text), item.base)
            except Expected as exc:
                raise ConfigError(f"{origin.where(name, key)}: expected {exc}") from None
        for f in dataclasses.fields(cls):  # relative default paths: against the config's folder too
            if f.name not in values and isinstance(f.default, Path):
                values[f.name] = kinds[f.name](str(f.default), base)
        built[name] = cls(**values)
    return built, origins, warnings


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None,
                 overrides: Iterable[str] = (), path: Path | None = None) -> Config:
    """Parse config text (and ``section.key=value`` overrides) into a validated Config."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    raw, _ = read_ini(text, source, base)
    for item in overrides:
        section, key, value = split_override(item)
        raw.setdefault(section, {})[key] = Raw(value, None, "--set", Path.cwd())
    built, origins, warnings = _build(raw, source, base)
    cfg = Config(path=path, origins=origins, warnings=tuple(warnings), source=source, **built)
    for section, key in REQUIRED:
        if getattr(getattr(cfg, section), key) is None:
            cfg.require(section, key, _REQUIRED_HINT[(section, key)])
    cfg = _resolve_mask_format(cfg)
    _validate(cfg)
    for w in warnings + _notices(cfg):
        log.warning(w)
    return cfg


_REQUIRED_HINT = {
    ("model", "num_classes"): "an integer >= 2 (classes including background)",
    ("mask", "rgb_map"): "a dict {(r,g,b): class_index} such as {(0,0,0):0, (0,255,0):1, (0,0,255):2} for "
                         "[mask] format = \"rgb\" (or format = \"index\" for masks whose pixels are class indices)",
}


def _resolve_mask_format(cfg: Config) -> Config:
    """[mask] format "auto" -> "rgb" when rgb_map is set, else "index" (a config written for the original
    always sets rgb_map, so it reads its masks exactly as before); "rgb" needs rgb_map.  Without rgb_map,
    "index" masks are drawn in the default class colours (``flexunet.config.colours.default_rgb_map``)."""
    m = cfg.mask
    fmt = m.format if m.format != "auto" else ("rgb" if m.rgb_map is not None else "index")
    if fmt == "rgb" and m.rgb_map is None:
        cfg.require("mask", "rgb_map", _REQUIRED_HINT[("mask", "rgb_map")])
    rgb_map = m.rgb_map
    if rgb_map is None:
        rgb_map = default_rgb_map(cfg.model.num_classes)
    return dataclasses.replace(cfg, mask=dataclasses.replace(m, format=fmt, rgb_map=rgb_map))


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read and validate a config file; relative paths resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; expected a train_eval_infer.config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); expected an INI config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); expected a readable config file") from None
    return parse_config(text, source=str(path), base_dir=p.resolve().parent, overrides=overrides,
                        path=p.resolve())


# --------------------------------------------------------------------------- logged names

# metrics [model] metrics may switch on; the honest per-class ones are always logged
EXTRA_METRICS = ("dice_coef_multiclass",)


def metric_suffix(name: str) -> str:
    """A class name as it appears in metric names: lower case, [a-z0-9_] only."""
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_") or "class"


def class_metric_names(class_names: Iterable[str]) -> list[str]:
    """The always-logged metrics: Dice and IoU per foreground class, their foreground means, then the
    predicted-pixel share per foreground class (the collapse guard reads it)."""
    fg = [metric_suffix(n) for n in list(class_names)[1:]]
    return ([f"dice_{s}" for s in fg] + [f"iou_{s}" for s in fg] + ["mean_dice", "mean_iou"]
            + [f"pred_{s}" for s in fg])


def logged_names(cfg: Config) -> list[str]:
    """What training logs each epoch: loss, the chosen extras, the per-class metrics, and their val_ forms."""
    chosen = [name for name in EXTRA_METRICS if name in cfg.model.metrics]
    train = ["loss", *chosen, *class_metric_names(cfg.class_names)]
    return train + [f"val_{name}" for name in train]


# --------------------------------------------------------------------------- validation


def _validate(cfg: Config) -> None:
    m = cfg.model
    for key in ("image_height", "image_width"):
        size = getattr(m, key)
        # 2**(num_layers-1) past the size divides nothing: said without computing it (num_layers may be huge)
        if m.num_layers - 1 >= size.bit_length() or size % 2 ** (m.num_layers - 1):
            levels = 2 ** (m.num_layers - 1) if m.num_layers <= 64 else f"2**{m.num_layers - 1}"
            raise cfg.error("model", key, f"a multiple of 2**(num_layers-1) = {levels} "
                                          f"for num_layers = {m.num_layers}")
    k = m.base_kernels
    if k[0] != k[1] or k[0] % 2 == 0:
        raise cfg.error("model", "base_kernels", "an odd square kernel such as (3,3) or (9,9)")
    if m.dilation[0] != m.dilation[1]:
        raise cfg.error("model", "dilation", "a square dilation such as (1,1) or (2,2)")
    deepest = m.dropout_rate * (m.num_layers - 1)
    if deepest >= 1:
        raise cfg.error("model", "dropout_rate", f"a rate below 1/(num_layers-1) = {1 / (m.num_layers - 1):.4g} "
                                                 f"for num_layers = {m.num_layers}: level i drops dropout_rate*i, "
                                                 f"so the deepest level would drop {deepest:.3g}")
    if m.max_filters is not None and m.max_filters < m.base_filters:
        raise cfg.error("model", "max_filters", f"None or >= base_filters ({m.base_filters})")
    rgb_map = cfg.mask.rgb_map
    indices = sorted(rgb_map.values())
    if indices != list(range(m.num_classes)):
        raise cfg.error("mask", "rgb_map", f"one colour per class index 0..{m.num_classes - 1} "
                                           f"(num_classes = {m.num_classes}), got indices {indices}")
    if m.class_weights is not None and len(m.class_weights) != m.num_classes:
        raise cfg.error("model", "class_weights", f"{m.num_classes} weights, one per class")
    names = cfg.dataset.class_names
    if names is not None and len(names) != m.num_classes:
        raise cfg.error("dataset", "class_names", f"{m.num_classes} names, background first")
    clash = class_name_clash(names) if names is not None else None
    if clash:
        raise cfg.error("dataset", "class_names", f"a different name for each class (case and punctuation "
                                                  f"aside); {clash}")
    ratios = cfg.split.ratios
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
        raise cfg.error("split", "ratios", "three fractions train, valid, test summing to 1 (train > 0)")
    _validate_metric_names(cfg)


def class_name_clash(names: Iterable[str]) -> str | None:
    """Why two class names would read as one class, or None: the evaluation keys its tables by name
    (compared here case aside) and training logs its metrics by :func:`metric_suffix` (foreground only)."""
    names = list(names)
    seen: dict[str, str] = {}
    for name in names:
        key = name.casefold()
        if key in seen:
            return f"{name!r} appears twice" if seen[key] == name else \
                f"{seen[key]!r} and {name!r} differ only in case"
        seen[key] = name
    suffixes: dict[str, str] = {}
    for name in names[1:]:
        suffix = metric_suffix(name)
        if suffix in suffixes:
            return f"{suffixes[suffix]!r} and {name!r} would both be logged as dice_{suffix}"
        suffixes[suffix] = name
    return None


def _validate_metric_names(cfg: Config) -> None:
    """[model] metrics, [train] metrics and [train] monitor name values training really logs."""
    selectable = [*EXTRA_METRICS, *class_metric_names(cfg.class_names)]
    for name in cfg.model.metrics:
        if name not in selectable:
            raise cfg.error("model", "metrics", _names_expected(name, selectable))
    logged = logged_names(cfg)
    for name in cfg.train.metrics:
        if name not in logged + ["learning_rate"]:
            raise cfg.error("train", "metrics", _names_expected(name, logged + ["learning_rate"]))
    if cfg.train.monitor not in logged:
        raise cfg.error("train", "monitor", _names_expected(cfg.train.monitor, logged))


def _names_expected(name: str, known: list[str]) -> str:
    base = name.removeprefix("val_")
    longer = [k for k in known if k.startswith(name)]
    hint = f"; did you mean {longer[0]!r}?" if name and longer else did_you_mean(name, known)
    if base in EXTRA_METRICS and base not in known:
        hint = f" (it is logged only when [model] metrics lists {base!r})"
    return f"names among {', '.join(known)}; {name!r} is not one{hint}"


def _notices(cfg: Config) -> list[str]:
    """Warnings about values that are accepted but change nothing."""
    out = []
    if cfg.model.final_activation == "sigmoid":
        out.append(f"{cfg.where('model', 'final_activation')}: the head is softmax whenever num_classes > 1 "
                   f"(as the original); \"sigmoid\" is ignored")
    if ("train", "shuffle_buffer") in cfg.origins:
        out.append(f"{cfg.where('train', 'shuffle_buffer')}: unused; every epoch is a full seeded "
                   f"permutation of the file list (the key can be removed)")
    for key in ("intensity", "lesion_paste"):
        if getattr(cfg.augmentor, key) and not cfg.model.generator:
            out.append(f"{cfg.where('augmentor', key)}: online augmentation only ([model] generator = True); "
                       f"`flexunet augment` writes no {key.replace('_', ' ')} variants")
    d, side = cfg.deformation, min(cfg.model.image_height, cfg.model.image_width)
    sigma = min(d.sigmoids or (d.sigmoid,))  # the smallest sigma moves pixels the most
    shift = d.alpha * 0.163 / sigma  # rms of uniform(-1, 1) noise Gaussian-smoothed
    if cfg.augmentor.deformation and cfg.model.generator and shift > 0.1 * side:
        out.append(f"{cfg.where('deformation', 'alpha')}: with sigma {sigma:g} it moves "
                   f"pixels by about {shift:.0f} px (rms) on {side}-px images, {100 * shift / side:.0f}% of the "
                   f"side: lesions lose their shape (the original's 1300 with sigma 8 is 5% of a 512-px slice)")
    return out


# --------------------------------------------------------------------------- writing


def dump_config(cfg: Config) -> str:
    """The resolved config as INI text in the same dialect (absolute paths)."""
    lines = ["; resolved by flexunet: every key with its effective value", ""]
    for name in SECTIONS:
        settings = getattr(cfg, name)
        lines.append(f"[{name}]")
        for f in dataclasses.fields(settings):
            lines.append(f"{f.name} = {format_value(getattr(settings, f.name))}")
        lines.append("")
    return "\n".join(lines)


def reference() -> str:
    """A Markdown table of every section and key: default, expected value, meaning."""
    out = []
    for name, cls in SECTIONS.items():
        if name == "test":
            continue
        title = "[valid] and [test]" if name == "valid" else f"[{name}]"
        out += [f"#### {title}", "", "| key | default | expects | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            aliases = f.metadata.get("aliases", ())
            key = f.name + (f" (alias {', '.join(aliases)})" if aliases else "")
            default = format_value(f.default).replace("|", "\\|")
            out.append(f"| {key} | `{default}` | {f.metadata['kind'].expected.replace('|', '/')} "
                       f"| {f.metadata['doc']} |")
        out.append("")
    return "\n".join(out)
