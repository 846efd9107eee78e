"""The foreground-verification loss of RepPointsV2: a sigmoid focal loss whose positive and
negative terms are normalised separately (the authors' ``SEPFocalLoss``; mmdet 3 has no such loss).

The foreground map is dense, one channel per class, and a positive cell carries the weight
``1 / area`` of the smallest box covering it (see ``task_modules.foreground_targets``), so that
every object contributes about equally however big it is. Hence the two normalisations:

* positives: ``sum(w * alpha * (1 - p)**gamma * -log p) / sum(w)``, a weighted mean;
* negatives: ``sum((1 - alpha) * p**gamma * -log(1 - p)) / avg_factor``, with ``avg_factor`` the
  number of positive cells, as in a standard focal loss.
"""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn


def separate_sigmoid_focal_loss(pred: Tensor, target: Tensor, weight: Tensor, avg_factor: float,
                                gamma: float = 2.0, alpha: float = 0.25) -> Tensor:
    """The loss of one batch.

    Args:
        pred (Tensor): Logits, any shape.
        target (Tensor): 1 on positive cells, anything below 1 on negative cells; ``pred``'s shape.
        weight (Tensor): The positive cells' weights (ignored on negative cells); ``pred``'s shape.
        avg_factor (float): The negative term's divisor (the authors: the number of positive
            cells); clamped to at least 1, so that a batch without objects has a finite loss.
        gamma (float): The focusing exponent. Defaults to 2.0.
        alpha (float): The positive term's weight; the negative term's is ``1 - alpha``.
            Defaults to 0.25.

    Returns:
        Tensor: The loss, a scalar.
    """
    if not pred.shape == target.shape == weight.shape:
        raise ValueError(f'pred {tuple(pred.shape)}, target {tuple(target.shape)} and weight '
                         f'{tuple(weight.shape)} must have the same shape')
    positive = target.eq(1)
    prob = pred.sigmoid()
    # log-sigmoid rather than log(sigmoid): the same value, finite for confident logits
    positive_loss = -F.logsigmoid(pred[positive]) * (1 - prob[positive]).pow(gamma) * alpha
    negative_loss = -F.logsigmoid(-pred[~positive]) * prob[~positive].pow(gamma) * (1 - alpha)
    loss = negative_loss.sum() / max(float(avg_factor), 1.)
    if positive.any():
        positive_weight = weight[positive]
        loss = loss + (positive_loss * positive_weight).sum() / positive_weight.sum().clamp(min=1e-12)
    return loss


class SeparateFocalLoss(nn.Module):
    """:func:`separate_sigmoid_focal_loss` times ``loss_weight``.

    The RepPointsV2 configs take the authors' settings: gamma 2, alpha 0.25, loss_weight 0.1.

    Args:
        gamma (float): The focusing exponent. Defaults to 2.0.
        alpha (float): The positive term's weight. Defaults to 0.25.
        loss_weight (float): The factor of the loss. Defaults to 1.0.
    """

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor,
                avg_factor: Optional[float] = None) -> Tensor:
        """The weighted loss.

        Args:
            pred (Tensor): Logits, any shape.
            target (Tensor): 1 on positive cells, anything below 1 on negative cells; ``pred``'s shape.
            weight (Tensor): The positive cells' weights (ignored on negative cells); ``pred``'s shape.
            avg_factor (float, optional): The negative term's divisor. Defaults to None: the number of
                positive cells (``target == 1``).

        Returns:
            Tensor: The loss times ``loss_weight``, a scalar.

        Raises:
            ValueError: If ``pred``, ``target`` and ``weight`` differ in shape.
        """
        if avg_factor is None:
            avg_factor = float(target.eq(1).sum())
        return self.loss_weight * separate_sigmoid_focal_loss(
            pred, target, weight, avg_factor, gamma=self.gamma, alpha=self.alpha)
