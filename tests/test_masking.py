"""Masking strategies: shapes, 0/1 values, the paper's box sizes, seeding, the target's own mask."""

from __future__ import annotations

import pytest
import torch

from realfill_plugins.masking.lama_boxes import LamaBoxes, box_masks


def _make(plugins, name, batch=8, size=64, **settings):
    strategy = plugins.registry("masking").create(plugins.registry("masking").get(name).Config(**settings))
    is_target = torch.tensor([i % 4 == 0 for i in range(batch)])
    target_masks = torch.zeros(batch, 1, size, size)
    target_masks[is_target, :, :, size // 2 :] = 1
    return strategy.make_masks(batch, size, size, is_target=is_target, target_masks=target_masks,
                               generator=torch.Generator().manual_seed(3)), is_target, target_masks


@pytest.mark.parametrize("name", ["lama-boxes", "target-own-mask", "strokes"])
def test_masks_are_binary_seeded_and_varied(plugins, name):
    masks, _, _ = _make(plugins, name)
    again, _, _ = _make(plugins, name)
    assert masks.shape == (8, 1, 64, 64)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masks, again)  # all randomness from the generator
    coverage = masks.mean(dim=(1, 2, 3))
    assert (coverage > 0).all() and len(set(coverage.tolist())) > 1


def test_lama_boxes_without_inversion_are_unions_of_boxes_within_size_bounds():
    config = LamaBoxes.Config(invert_prob=0.0, min_boxes=1, max_boxes=1)
    masks = box_masks(config, 64, 100, 100, torch.Generator().manual_seed(0))
    for mask in masks[:, 0]:
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        h, w = len(rows), len(cols)
        assert 3 <= h <= 25 and 3 <= w <= 25  # each side 3%-25% of the image
        assert mask.sum() == h * w  # one solid rectangle


def test_lama_boxes_invert_about_half():
    masks = box_masks(LamaBoxes.Config(), 400, 32, 32, torch.Generator().manual_seed(1))
    inverted = (masks.mean(dim=(1, 2, 3)) > 0.5).float().mean()
    assert 0.4 < inverted < 0.6


def test_target_own_mask_gives_the_target_its_mask(plugins):
    masks, is_target, target_masks = _make(plugins, "target-own-mask")
    assert torch.equal(masks[is_target], target_masks[is_target])
    assert not torch.equal(masks[~is_target], target_masks[~is_target])


def test_bad_settings_are_rejected(plugins):
    from realfill.config import resolve_config
    from realfill.errors import UserError

    with pytest.raises(UserError, match="max_boxes"):
        resolve_config(preset="smoke", overrides=["masking.min_boxes=9", "masking.max_boxes=2"], plugins=plugins)
    with pytest.raises(UserError, match="masking.bogus"):
        resolve_config(preset="smoke", overrides=["masking.bogus=1"], plugins=plugins)
