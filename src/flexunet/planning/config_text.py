"""``flexunet plan``'s written config: the choices (:func:`flexunet.planning.plan.choose`) in the original's
dialect, each value under a ``;`` comment naming the fact that chose it, paths relative to the config's folder.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

from flexunet.planning.fingerprint import MERGED_SHOWN, SUBSETS
from flexunet.planning.probe import augmentation_text, dropout_lines
from flexunet.planning.sizes import size_lines, size_warnings


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def _dot(rel: str) -> str:
    return rel if rel.startswith("..") else "./" + rel


def config_text(fp: dict, c: dict[str, Any], out: Path, dataset: Path, minutes: float) -> str:
    """The planned config, in the original's dialect, each value under a comment saying why."""
    base = out.parent
    d = {s: {k: _dot(_rel(dataset / s / k, base)) for k in ("images", "masks")} for s in SUBSETS}
    names = c["names"]
    shares = ", ".join(f"{n} {fp['pixel_share'][n]:.2%}" for n in names[1:])
    lesions = "; ".join(f"{n}: median {v['median_px']:.0f} px, smallest {v['min_px']} px"
                        for n, v in fp["lesions"].items() if v.get("components"))
    size, size_why = c["size"]
    n = fp["slices"]
    valid_lesions = fp["subsets"].get("valid", {}).get("slices_with_foreground", 0)
    lines = f"""; train_eval_infer.config written by `flexunet plan` on {time.strftime('%Y-%m-%d')}
; dataset: {fp['dataset']}
; {n['train']} train / {n['valid']} valid / {n['test']} test slices
{_sizes_comment(fp)}; the facts behind every choice are in fingerprint.json beside this file; time budget {minutes:g} min
; foreground pixel share: {shares or 'none'}
; lesion components: {lesions or 'none'}

[model]
model          = "TensorFlowFlexUNet"
; {c['generator'][1]}
generator      = {c['generator'][0]}
; {size_why}
image_width    = {size}
image_height   = {size}
; {c['channels'][1]}
image_channels = {c['channels'][0]}
input_normalize = True
; each image minus its own mean brain grey (its mid-grey pixels), inside the network: a scanner
; calibrated a few HU off is not another tissue (docs/generalisation.md, sixth round)
centre_intensity = True
; BatchNorm after every convolution: without it a net of this depth saturates its softmax on
; lesions of {c['lesion_share']:.2%} of the pixels and stops learning
normalization  = True
num_classes    = {len(names)}
; {c['base_filters'][1]}
base_filters   = {c['base_filters'][0]}
base_kernels   = (3,3)
; {c['levels'][1]}
num_layers     = {c['levels'][0]}
{max_filters_line(c['max_filters'])}{dropout_lines(c['base_filters'][0], c['levels'][0])}
dilation       = (1,1)
; Adam at 1e-3 suits BatchNorm nets; clipping by value is off (it slows Adam and BatchNorm needs none)
optimizer      = "Adam"
learning_rate  = 0.001
clipvalue      = None
; cross-entropy + Dice: the lesions are {c['lesion_share']:.2%} of the pixels, CE alone favours background
loss           = "ce_dice"
; {c['class_weights'][1]}
class_weights  = {c['class_weights'][0]}
; {c['members'][1]}
members        = {c['members'][0]}

[dataset]
class_names    = {json.dumps(names)}

[train]
; {c['epochs'][1]}
epochs         = {c['epochs'][0]}
; {c['batch_size'][1]}
batch_size     = {c['batch_size'][0]}
; {c['patience'][1]}
patience       = {c['patience'][0]}
; the validation loss (class-weighted CE + Dice) picks the best model: it falls smoothly, while the
; validation Dice, from the {valid_lesions} of {n['valid']} validation slices holding a lesion, jumps
; from epoch to epoch and would pick early, unsteady models
monitor        = "val_loss"
; the run ends with the mean of the weights of its 5 epochs with the lowest validation loss, not one
; epoch's: which single epoch ranks first on {n['valid']} validation slices is partly chance
; (docs/generalisation.md, eleventh round)
average_best   = 5
{member_folds_lines(c['members'][0])}model_dir      = "./models"
eval_dir       = "./eval"
images_dir     = "{d['train']['images']}"
masks_dir      = "{d['train']['masks']}"
; {c['precision'][1]}
mixed_precision = "auto"
; the schedule below sets the learning rate; no plateau reducer
learning_rate_reducer = False
; {c['warmup_epochs'][1]}
warmup_epochs  = {c['warmup_epochs'][0]}
; cosine decay to 0 over the run after the warm-up: large steps first, fine ones last
lr_schedule    = "cosine"
; {c['oversample'][1]}
foreground_oversampling = {c['oversample'][0]}
; the output layer starts at the class frequencies of the training masks ({c['lesion_share']:.2%} lesion
; pixels): no epochs lost unlearning a uniform first guess, rare classes are learned sooner
output_bias    = "prior"
; a foreground class that gets no predicted pixel for 3 epochs stops the run with one line
on_collapse    = "stop"
collapse_patience = 3
; {c['cache'][1]}
cache          = {c['cache'][0]}
; epoch-change inference and TensorBoard cost time a {minutes:g}-min budget needs for training
epoch_change_infer = False
tensorboard    = False
seed           = 137

[valid]
images_dir = "{d['valid']['images']}"
masks_dir  = "{d['valid']['masks']}"

[test]
images_dir = "{d['test']['images']}"
masks_dir  = "{d['test']['masks']}"

[infer]
; the test images, predicted into a new folder
images_dir = "{d['test']['images']}"
output_dir = "./infer_output"
overlays   = True
; a pixel is marked as a lesion class where that class's probability is above a third of
; background's: both synthetic families' mean Dice rose, no set fell by more than 0.01
; (docs/generalisation.md, seventh round); evaluate, the report and training's end decide alike
foreground_weight = 3.0
; each image is also predicted mirrored as in training and the two softmaxes averaged: with the
; lower bar above, both families' mean Dice rose again (eighth round); twice the prediction time
flip_tta = True

[eval]
batch_size = {c['batch_size'][0]}

{mask_section(fp)}{prepare_section(fp)}
{augmentation_text(c['generator'][0])}"""
    return lines


_SOURCE_NAMES = {"dicom": "DICOM", "nifti": "NIfTI"}


def prepare_section(fp: dict) -> str:
    """[prepare] for slices prepared from HU (DICOM, NIfTI): the window and size prepare used, so infer reads
    DICOM and NIfTI inputs as the training slices were made; empty for PNG data."""
    rec = fp.get("prepared") or {}
    window = rec.get("window")
    if rec.get("source") not in _SOURCE_NAMES or window is None:
        return ""
    three = window == "three_windows"
    centre, width = (40.0, 80.0) if three else window
    return (f"\n[prepare]\n; the slices were prepared from {_SOURCE_NAMES[rec['source']]} in Hounsfield units "
            f"(manifest.json): infer reads\n; DICOM and NIfTI inputs through the same window(s) and size\n"
            f"window_center = {float(centre)!r}\nwindow_width  = {float(width)!r}\nthree_windows = {three}\n"
            f"size          = {int(rec.get('size') or 512)}\nimage_resize  = \"{rec.get('image_resize') or 'area'}\"\n")


def member_folds_lines(members: int) -> str:
    """[train] member_folds for a run of several members, else nothing."""
    if members < 2:
        return ""
    return ("; members 2.. each validate on a fold of the training patients as large as [valid] and train on the\n"
            "; rest and [valid]: the members learn from, and pick their epochs on, different patients; their pair\n"
            "; gained on the third family and held on the other two (docs/generalisation.md, nineteenth round)\n"
            "member_folds   = True\n")


def max_filters_line(cap: int | None) -> str:
    """[model] max_filters for a net with a level added (its new level as wide as its widest), else nothing."""
    return "" if cap is None else f"; the added level keeps the widest level's filters\nmax_filters    = {cap}\n"


def mask_section(fp: dict) -> str:
    """[mask]: the format found in the masks and its evidence; for colour masks rgb_map and every colour
    merged into a class (map_unmapped)."""
    form = fp["mask_format"]
    lines = ["[mask]", *_comment(form["evidence"])]
    if form["format"] == "index":
        shown = ", ".join(cl["colour_name"] for cl in fp["classes"])
        lines += [f"; no rgb_map needed: predicted masks and overlays show the classes in {shown} (set",
                  "; rgb_map = {(r,g,b): index, ...} to choose other colours)", 'format = "index"']
        return "\n".join(lines) + "\n"
    fg = ", ".join(f"({r},{g},{b}) {cl['name']}" for cl in fp["classes"] for r, g, b in [cl["colour"]])
    rgb = ", ".join(f"({r},{g},{b}):{cl['index']}" for cl in fp["classes"] for r, g, b in [cl["colour"]])
    lines += [f"; colours found in the masks: {fg}", 'format = "rgb"', f"rgb_map = {{{rgb}}}"]
    merged = form["merged"]
    if merged:
        lines.append(f"; {len(merged)} colour(s) of {sum(m['pixels'] for m in merged)} px in all are no class: "
                     f"each goes to the nearest class colour")
        for m in merged[:MERGED_SHOWN]:
            lines += _comment(f"{tuple(m['colour'])}: {m['pixels']} px -> {m['into']}; {m['why']}")
        if len(merged) > MERGED_SHOWN:
            lines.append(f"; ... and {len(merged) - MERGED_SHOWN} more (fingerprint.json, mask_format.merged)")
        lines.append("map_unmapped = True")
    return "\n".join(lines) + "\n"


def _sizes_comment(fp: dict) -> str:
    """The valid and test subsets' sizes and what they cannot pin down, as comment lines."""
    sizes = fp.get("sizes")
    if not sizes:
        return ""
    return "".join(line + "\n" for text in size_lines(sizes) + size_warnings(sizes) for line in _comment(text))


def _comment(text: str, width: int = 110) -> list[str]:
    """``text`` as ``;`` comment lines of at most about ``width`` characters."""
    return ["; " + line for line in textwrap.wrap(text, width - 2, break_long_words=False)]
