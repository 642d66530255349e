"""corrflow: self-supervised dense video correspondence by colourisation, and its uses."""

__version__ = "0.1.0"
