"""Faithfulness metrics on a toy model whose evidence is known: it only looks at one quadrant."""

import torch
from torch import nn

from camcli.evaluation.faithfulness import auc, faithfulness


def checker(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return ((i[:, None] + i[None, :]) % 2 * 2 - 1).float()  # +1/-1 pattern


class TopLeft(nn.Module):
    """Class 0's logit is the image's correlation with a checkerboard, in the top-left quadrant
    only; class 1 is fixed. Blacking pixels out or blurring them removes that evidence."""

    def forward(self, x):
        h, w = x.shape[2] // 2, x.shape[3] // 2
        evidence = (x[:, :, :h, :w] * checker(x.shape[2])[:h, :w]).mean((1, 2, 3))
        return torch.stack([10 * evidence, torch.zeros_like(evidence)], 1)


def test_a_map_on_the_right_quadrant_is_more_faithful():
    torch.manual_seed(0)
    model = TopLeft().eval()
    pixels = (0.5 + 0.4 * checker(32)).expand(3, 32, 32).clone()
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    right = torch.zeros(32, 32)
    right[:16, :16] = 1.0
    wrong = torch.zeros(32, 32)
    wrong[16:, 16:] = 1.0
    good = faithfulness(model, pixels, right, 0, mean, std, steps=8)
    bad = faithfulness(model, pixels, wrong, 0, mean, std, steps=8)
    assert good.drop < 0.01 < 0.4 < bad.drop  # masking with the right map keeps the evidence
    assert not bad.increase
    assert good.deletion_auc < bad.deletion_auc  # deleting the right pixels first kills the score fast
    assert good.insertion_auc > bad.insertion_auc  # inserting them first restores it fast


def test_auc_of_known_curves():
    assert auc(torch.tensor([1.0, 1.0, 1.0])) == 1.0
    assert auc(torch.tensor([1.0, 0.0])) == 0.5
    assert abs(auc(torch.linspace(0, 1, 11)) - 0.5) < 1e-6  # float32 samples
