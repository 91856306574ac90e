"""Image loading: EXIF orientation applied, RGB, size bounds; every error names the path.

Images come from untrusted data, so the size is read from the file header and checked (pixel
count, side bounds) before any pixel is decoded: a 20000x20000 PNG of a few bytes would
otherwise decode to gigabytes. PIL's own ``DecompressionBombError`` becomes ``ImageTooLarge``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from vlm_r1.errors import UserFacingError

#: EXIF orientations that swap width and height (rotations by 90/270 degrees).
_TRANSPOSED = {5, 6, 7, 8}
#: Default pixel limit (``data.max_image_pixels``): 8000x8000, about 190 MB once decoded as RGB.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000


class ImageError(UserFacingError, ValueError):
    """An image is missing, undecodable or outside the size bounds; ``reason`` for skip counts."""

    reason = "bad_image"


class ImageTooLarge(ImageError):
    """More pixels than the limit, seen in the header (a decompression bomb, or just too big)."""

    reason = "image_too_large"


@dataclass(frozen=True)
class SizeBounds:
    """Accepted image sizes. Qwen-VL's processor rejects sides < 1 patch and aspect ratio > 200."""

    min_side: int = 4
    max_side: int = 16_384
    max_aspect: float = 200.0

    def check(self, width: int, height: int, path: str | Path) -> None:
        if min(width, height) < self.min_side:
            raise ImageError(
                f"image {path} is {width}x{height}: a side is below the minimum {self.min_side} px"
            )
        if max(width, height) > self.max_side:
            raise ImageError(
                f"image {path} is {width}x{height}: a side exceeds the maximum {self.max_side} px"
            )
        if max(width, height) / min(width, height) > self.max_aspect:
            raise ImageError(
                f"image {path} is {width}x{height}: aspect ratio above {self.max_aspect}"
            )


DEFAULT_BOUNDS = SizeBounds()


@contextmanager
def _open(path: str | Path, max_pixels: int | None) -> Iterator[Image.Image]:
    """The opened (not decoded) image, its pixel count checked; errors become ``ImageError``."""
    try:
        with warnings.catch_warnings():  # the size is checked below, against our own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as raw:
            width, height = raw.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(
                    f"image {path} is {width}x{height} = {width * height} pixels, above the "
                    f"limit of {max_pixels} pixels (data.max_image_pixels)"
                )
            yield raw
    except ImageError:
        raise
    except FileNotFoundError as err:
        raise ImageError(f"image not found: {path}") from err
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"image {path} has too many pixels to decode safely: {err}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot decode image {path}: {err}") from err


def _upright_size(raw: Image.Image) -> tuple[int, int]:
    width, height = raw.size
    return (height, width) if raw.getexif().get(0x0112, 1) in _TRANSPOSED else (width, height)


def load_image(
    path: str | Path,
    bounds: SizeBounds = DEFAULT_BOUNDS,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode an image as upright RGB (EXIF orientation applied), after checking its header
    size against ``max_pixels`` and ``bounds``."""
    with _open(path, max_pixels) as raw:
        bounds.check(*_upright_size(raw), path)
        return ImageOps.exif_transpose(raw).convert("RGB")


def image_size(
    path: str | Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[int, int]:
    """``(width, height)`` as the model will see it (EXIF-upright), reading only the header."""
    with _open(path, max_pixels) as raw:
        return _upright_size(raw)
