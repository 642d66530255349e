from corrflow.losses.colour_nll import colour_nll

__all__ = ["colour_nll"]
