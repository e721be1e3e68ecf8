"""flexunet.synthetic.scanner: scanner profiles shift either family's intensities as they say."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from flexunet.synthetic.phantom import plan_slices as phantom_plan
from flexunet.synthetic.render import render_slice as phantom_render
from flexunet.synthetic.scanner import (PROFILES, STANDARD, ScannerSettings, apply_settings, draw_settings,
                                        scanner_profile, shifted, streak_noise)
from flexunet.synthetic.territory import plan_slices, render_slice
from flexunet.utils.errors import DataError

SIZE = 64


def test_calibration_is_gain_then_offset_and_noise_free_settings_add_none() -> None:
    flat = np.full((32, 32), 30.0, np.float32)
    out = apply_settings(flat, ScannerSettings(gain=1.05, offset_hu=3.0), 1.0, np.random.default_rng(0))
    assert np.allclose(out, 30.0 * 1.05 + 3.0)
    assert np.array_equal(apply_settings(flat, ScannerSettings(), 1.0, np.random.default_rng(0)), flat)


def test_streak_noise_is_unit_sd_seeded_and_correlated() -> None:
    a = streak_noise(96, 1.0, np.random.default_rng(4))
    assert a.dtype == np.float32 and a.std() == pytest.approx(1.0, abs=1e-3)
    assert np.array_equal(a, streak_noise(96, 1.0, np.random.default_rng(4)))
    # neighbours are correlated (white noise: ~0)
    assert np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1] > 0.3


def test_profiles_draw_within_their_ranges() -> None:
    for profile in PROFILES.values():
        s = draw_settings(profile, np.random.default_rng(1))
        for name in ("gain", "offset_hu", "noise_hu", "blur_mm", "sharpen"):
            lo, hi = getattr(profile, name)
            assert lo <= getattr(s, name) <= hi
    assert STANDARD.is_identity and not PROFILES["sharp"].is_identity
    with pytest.raises(DataError, match="scanner = 'vendor'; expected one of standard, sharp, soft"):
        scanner_profile("vendor")


def _parenchyma_stats(render, plan, profile) -> tuple[float, float]:
    """Mean HU of 20-45 HU pixels in the standard image, and the sd of their fine texture."""
    means, fine = [], []
    for i, (patient, j) in enumerate(plan):
        base = render(patient, j, i, STANDARD).astype(np.float32)
        hu = render(patient, j, i, profile).astype(np.float32)
        smooth = ndimage.uniform_filter(base, 5)
        tissue = ndimage.binary_erosion((smooth > 20) & (smooth < 45), iterations=2)
        means.append(float((hu - base)[tissue].mean()))
        fine.append(float((hu - ndimage.uniform_filter(hu, 3))[tissue].std()))
    return float(np.mean(means)), float(np.mean(fine))


@pytest.mark.parametrize("family", ["phantom", "territory"])
def test_sharp_and_soft_shift_the_intensities_as_stated(family: str) -> None:
    if family == "phantom":
        plan = phantom_plan(2, 6)

        def render(patient, j, i, profile):
            hu, _ = phantom_render(patient, j, SIZE, np.random.default_rng([2, 1, i]))
            return shifted(hu, profile, patient.spacing_mm(SIZE), np.random.default_rng([2, 3, patient.index]),
                           np.random.default_rng([2, 4, i]))
    else:
        plan = plan_slices(2, 6)

        def render(patient, j, i, profile):
            return render_slice(patient, j, SIZE, 2, i, profile)[0]
    _, fine_standard = _parenchyma_stats(render, plan, STANDARD)
    sharp_shift, fine_sharp = _parenchyma_stats(render, plan, PROFILES["sharp"])
    soft_shift, fine_soft = _parenchyma_stats(render, plan, PROFILES["soft"])
    # sharp: gain 1.03-1.07 on ~22-44 HU, then +2..5 HU; soft: gain 0.93-0.97, then -2..-4 HU
    assert 2.5 < sharp_shift < 8.5 and -7.0 < soft_shift < -2.0
    assert fine_sharp > 1.3 * fine_standard and fine_soft < 1.05 * fine_standard   # soft: blur against its noise


def test_labels_do_not_depend_on_the_scanner() -> None:
    for i, (patient, j) in enumerate(plan_slices(3, 8)):
        labels = [render_slice(patient, j, 48, 3, i, p)[1] for p in PROFILES.values()]
        assert all(np.array_equal(labels[0], other) for other in labels[1:])
