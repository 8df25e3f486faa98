"""Regenerate ``kdsl/assets/digits.bin.gz`` from scikit-learn's bundled 8x8 digits.

kdsl ships the digits as a tiny binary file so that examples and tests run without scikit-learn.
Run ``python tools/make_digits_asset.py`` (scikit-learn required) to rebuild it; the output is
byte-for-byte deterministic.

Layout of the decompressed payload (little-endian), also documented in :mod:`kdsl.data`:

=======  =====  ==========================================================
offset   size   content
=======  =====  ==========================================================
0        8      magic ``b"KDSLDIG1"``
8        4      ``n``, number of images (uint32)
12       1      image height (uint8)
13       1      image width (uint8)
14       1      largest pixel value (uint8; 16 for these digits)
15       1      number of classes (uint8)
16       n*h*w  pixels, uint8, image-major then row-major
16+n*h*w n      labels, uint8
=======  =====  ==========================================================
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

MAGIC = b"KDSLDIG1"
HEADER = struct.Struct("<8sIBBBB")
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "kdsl" / "assets" / "digits.bin.gz"


def build_payload() -> bytes:
    """Return the uncompressed asset built from ``sklearn.datasets.load_digits()``."""
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target)
    # The digits are stored as floats but are exact integers in 0..16; refuse anything else
    # rather than silently rounding, since the test suite compares the asset to sklearn exactly.
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 255:
        raise ValueError("sklearn digits are no longer small non-negative integers")
    n, height, width = images.shape
    max_value = int(images.max())
    num_classes = int(labels.max()) + 1
    header = HEADER.pack(MAGIC, n, height, width, max_value, num_classes)
    return header + images.astype(np.uint8).tobytes(order="C") + labels.astype(np.uint8).tobytes()


def build_asset() -> bytes:
    """Return the gzip-compressed asset; ``mtime=0`` keeps the bytes reproducible."""
    return gzip.compress(build_payload(), compresslevel=9, mtime=0)


def main(argv: list[str] | None = None) -> None:
    """Write the asset (to ``kdsl/assets/digits.bin.gz`` unless ``--output`` says otherwise)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    data = build_asset()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"wrote {args.output} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
