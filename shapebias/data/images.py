"""Opening image files safely: a header that claims more pixels than Pillow's limit is an error.

Pillow only warns between ``Image.MAX_IMAGE_PIXELS`` (about 89 M pixels) and twice that, and a
small file can claim a huge size (a decompression bomb) that decoding would then allocate.
:func:`open_image` turns both the warning and Pillow's own error into a :class:`DataError` that
names the file, before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from shapebias.errors import DataError


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """``Image.open(path)`` as a context manager, refusing decompression bombs."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(
                f"image {str(path)!r} is refused: {exc} (accepted: at most "
                f"{Image.MAX_IMAGE_PIXELS} pixels); resize or remove the file"
            ) from None
    with im:
        yield im
