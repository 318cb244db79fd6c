"""The fast label upsampling equals argmax of full bilinear upsampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tfcseg.postprocess import labels_from_logits, labels_from_logits_plain


@pytest.mark.parametrize("low,size", [((12, 17), (48, 68)), ((13, 9), (50, 35)), ((30, 40), (119, 161)),
                                      ((8, 8), (8, 8)), ((20, 20), (11, 13)), ((1, 5), (3, 20))])
@pytest.mark.parametrize("smooth", [False, True])
def test_fast_labels_equal_plain(low, size, smooth):
    torch.manual_seed(0)
    if smooth:  # realistic: large regions, few boundaries
        logits = F.interpolate(torch.randn(2, 6, 4, 4), size=low, mode="bilinear", align_corners=False)
    else:  # worst case: nearly every pixel a boundary
        logits = torch.randn(2, 6, *low)
    fast = labels_from_logits(logits, size)
    plain = labels_from_logits_plain(logits, size)
    assert fast.shape == (2, *size) and fast.dtype == torch.uint8
    assert torch.equal(fast.long(), plain)
    # channels-last logits (what the model returns) give the same labels
    cl = labels_from_logits(logits.contiguous(memory_format=torch.channels_last), size)
    assert torch.equal(cl, fast)


def test_many_classes_keep_int64_labels():
    logits = torch.randn(1, 300, 6, 7)
    fast = labels_from_logits(logits, (11, 13))
    assert fast.dtype == torch.int64
    assert torch.equal(fast, labels_from_logits_plain(logits, (11, 13)))


def test_label_hysteresis_by_hand():
    from tfcseg.postprocess import LabelHysteresis

    hold = LabelHysteresis(1.0)
    # [class, pixel] values, as logits [1, K=3, 1, 2]
    first = torch.tensor([[0.0, 0.0], [0.0, 0.0], [2.0, 3.0]]).reshape(1, 3, 1, 2)  # labels [2, 2]
    assert torch.equal(hold(first), first)  # nothing held yet
    # pixel 0: class 0 now leads class 2 by 0.5 < 1 -> keeps 2; pixel 1: class 1 leads by 1.5 -> 1
    second = torch.tensor([[2.5, 0.0], [0.0, 3.5], [2.0, 2.0]]).reshape(1, 3, 1, 2)
    kept = second.clone()
    out = hold(second)
    assert torch.equal(second, kept)  # the input is left alone
    assert out[0].argmax(0).flatten().tolist() == [2, 1]
    assert torch.equal(out - second, torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]).reshape(1, 3, 1, 2))
    # the held labels are the adjusted argmax: pixel 1 is now held at class 1
    third = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.9, 0.9]]).reshape(1, 3, 1, 2)
    assert hold(third)[0].argmax(0).flatten().tolist() == [2, 1]
    # another size starts afresh; reset() too; margin 0 changes nothing
    other = torch.randn(1, 3, 2, 2)
    assert torch.equal(hold(other), other)
    hold.reset()
    assert torch.equal(hold(second), second)
    assert LabelHysteresis(0.0)(second) is second
    with pytest.raises(ValueError, match="margin >= 0"):
        LabelHysteresis(-1.0)


def test_motion_aware_hysteresis_by_hand():
    """power q > 0: the margin at a point is margin * clamp(s, 0, 1)^q, s the similarity to the
    previous frame; q = 0 is the same margin everywhere."""
    from tfcseg.postprocess import LabelHysteresis

    first = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 3.0, 1.0]]).reshape(1, 3, 1, 3)  # labels 2
    # class 0 leads the held class 2 by 0.5, 0.4 and 0.5
    second = torch.tensor([[2.5, 3.4, 1.5], [0.0, 0.0, 0.0], [2.0, 3.0, 1.0]]).reshape(1, 3, 1, 3)
    similarity = torch.tensor([[1.0, 0.5, -0.3]])  # unchanged, half, changed (clamped to 0)
    hold = LabelHysteresis(2.0, power=2.0)
    assert hold.needs_similarity and not hold.holding
    hold(first)  # nothing held yet: no similarity needed
    assert hold.holding
    out = hold(second, similarity)
    # margins 2 * (1, 0.25, 0) = (2, 0.5, 0): the first two hold class 2, the last lets class 0 in
    assert torch.allclose(out - second, torch.tensor([[0.0] * 3, [0.0] * 3, [2.0, 0.5, 0.0]]).reshape(1, 3, 1, 3))
    assert out[0].argmax(0).flatten().tolist() == [2, 2, 0]
    with pytest.raises(ValueError, match="needs the frame's similarity"):
        hold(second)
    uniform = LabelHysteresis(2.0)
    uniform(first)
    assert not uniform.needs_similarity and not LabelHysteresis(0.0, power=4.0).needs_similarity
    assert torch.equal(uniform(second, similarity), second + torch.tensor([0.0, 0.0, 2.0]).reshape(1, 3, 1, 1))
    with pytest.raises(ValueError, match="hysteresis_power -1.0: expected a power >= 0"):
        LabelHysteresis(1.0, power=-1.0)


def test_label_hysteresis_keeps_the_logits_layout():
    """The model's logits are channels-last, which labels_from_logits reads fastest: the raised
    copy keeps that layout (uniform and motion-aware), and its values are the plain ones."""
    from tfcseg.postprocess import LabelHysteresis

    logits = torch.randn(1, 5, 6, 7).contiguous(memory_format=torch.channels_last)
    for hold, sim in ((LabelHysteresis(0.5), None), (LabelHysteresis(0.5, power=2.0), torch.rand(6, 7))):
        hold(logits)
        out = hold(logits, sim)
        assert out.is_contiguous(memory_format=torch.channels_last)
        plain = LabelHysteresis(hold.margin, hold.power)
        plain(logits.contiguous())
        assert torch.equal(out, plain(logits.contiguous(), sim))
    assert LabelHysteresis(0.0, power=3.0).power_in_use == 0.0 and LabelHysteresis(1.0, 3.0).power_in_use == 3.0
