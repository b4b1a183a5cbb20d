import numpy as np
import torch
import torch.nn.functional as F

from segclass.losses import class_weights, weighted_pixel_loss


def test_class_weights_inverse_frequency_max_one_absent_zero():
    weights = class_weights(np.array([800, 100, 0, 100]))
    assert np.allclose(weights, [0.125, 1.0, 0.0, 1.0])


def test_class_weights_no_pixels():
    assert np.array_equal(class_weights(np.zeros(3)), np.zeros(3))


def test_weighted_pixel_loss_matches_torch():
    logits = torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    weights = torch.tensor([0.1, 1.0, 0.5, 0.3])
    assert torch.allclose(weighted_pixel_loss(logits, target, weights), F.cross_entropy(logits, target, weight=weights))


def test_weighted_pixel_loss_all_zero_weight_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.full((1, 4, 4), 2)
    loss = weighted_pixel_loss(logits, target, torch.tensor([1.0, 1.0, 0.0]))
    assert loss.item() == 0.0
