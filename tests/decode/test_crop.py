"""The random-resized-crop window: drawn from the image's size alone, a pure function of (seed, epoch, rank,
position), inside the image, and torchvision's rule for area, ratio and the fallback."""
import numpy as np
import pytest

from vitdata.decode import CropBox, crop_rng, sample_crop_box

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def test_the_window_is_a_pure_function_of_seed_epoch_rank_and_position():
    draw = lambda *key: sample_crop_box(500, 375, SCALE, RATIO, crop_rng(*key))   # noqa: E731
    assert draw(0, 1, 0, 7) == draw(0, 1, 0, 7)
    others = {draw(0, 1, 0, 8), draw(1, 1, 0, 7), draw(0, 2, 0, 7), draw(0, 1, 1, 7)}
    assert draw(0, 1, 0, 7) not in others and len(others) == 4


@pytest.mark.parametrize("width, height", [(500, 375), (375, 500), (224, 224), (2400, 1600), (31, 17)])
def test_windows_fit_the_image_within_the_scale_and_ratio_ranges(width, height):
    for pos in range(300):
        box = sample_crop_box(width, height, SCALE, RATIO, crop_rng(0, 0, 0, pos))
        assert isinstance(box, CropBox) and box.w > 0 and box.h > 0
        assert 0 <= box.x <= width - box.w and 0 <= box.y <= height - box.h
        if (box.w, box.h) != (width, height) and min(box.w, box.h) >= 20:   # rounding moves area and ratio a little
            area = box.w * box.h / (width * height)
            assert SCALE[0] * 0.8 <= area <= SCALE[1] + 1e-9
            assert RATIO[0] * 0.9 <= box.w / box.h <= RATIO[1] * 1.1


def test_the_window_draws_are_uniform_and_in_range():
    rng = crop_rng(0, 0, 0, 0)
    u = np.array([rng.random() for _ in range(20000)])
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    ints = [rng.randint(3, 5) for _ in range(3000)]
    assert set(ints) == {3, 4, 5} and all(abs(ints.count(v) - 1000) < 120 for v in (3, 4, 5))


def test_an_image_no_window_fits_gets_the_centred_window_with_the_ratio_clamped():
    # 1000 x 10: every try asks for a window taller than the image
    box = sample_crop_box(1000, 10, SCALE, RATIO, crop_rng(0, 0, 0, 0))
    assert box == CropBox((1000 - round(10 * 4 / 3)) // 2, 0, round(10 * 4 / 3), 10)
    assert sample_crop_box(50, 50, (1.0, 1.0), (1.0, 1.0), crop_rng(0, 0, 0, 0)) == CropBox(0, 0, 50, 50)


def test_the_area_fraction_is_spread_over_the_scale_range():
    fractions = [(lambda b: b.w * b.h / 187500)(sample_crop_box(500, 375, SCALE, RATIO, crop_rng(3, 0, 0, p)))
                 for p in range(2000)]
    assert 0.4 < np.mean(fractions) < 0.6 and min(fractions) < 0.1 and max(fractions) > 0.95
