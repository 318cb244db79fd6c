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
