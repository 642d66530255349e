from corrflow.losses.class_balanced_bce import ClassBalancedBCE, class_balanced_bce_loss, deep_supervision_loss
from corrflow.losses.colour_nll import colour_nll

__all__ = ["ClassBalancedBCE", "class_balanced_bce_loss", "colour_nll", "deep_supervision_loss"]
