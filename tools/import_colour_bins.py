"""Import an existing (K, 2) array of Lab (a, b) colour centroids as a corrflow colour-bin artefact.

``python tools/import_colour_bins.py centroids_16k_kinetics_10000samples.npy -o kinetics_k16.npz --allow-pickle``

then train with them: ``python tools/train.py experiment=corrflow colour_bins.path=kinetics_k16.npz``.
The released CorrFlow file was written with ``ndarray.dump``, a pickle: ``--allow-pickle`` reads it
(only for a file you trust; a pickle can run code when loaded).
"""

import argparse
import json
from pathlib import Path

from corrflow.models.quantizer import import_colour_bins
from corrflow.utils.cli import user_errors
from corrflow.utils.quiet import quiet_third_party


@user_errors
def main(argv: list[str] | None = None) -> None:
    quiet_third_party()  # known third-party tips and warnings (corrflow.utils.quiet)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="a .npy (plain or pickled) or .txt file holding a (K, 2) array")
    p.add_argument("-o", "--output", type=Path, default=None, help="the artefact to write (default: <src stem>.npz)")
    p.add_argument("--allow-pickle", action="store_true", help="read a pickled array (ndarray.dump); trusted files only")
    a = p.parse_args(argv)
    out = a.output or a.src.with_suffix(".npz")
    centroids, meta = import_colour_bins(a.src, out, allow_pickle=a.allow_pickle)
    print(f"saved {centroids.shape[0]} colour bins to {out}")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
