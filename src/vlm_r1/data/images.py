"""Image loading: EXIF orientation applied, RGB, size bounds; every error names the path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

#: EXIF orientations that swap width and height (rotations by 90/270 degrees).
_TRANSPOSED = {5, 6, 7, 8}


class ImageError(ValueError):
    """An image is missing, undecodable or outside the size bounds."""


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


def load_image(path: str | Path, bounds: SizeBounds = DEFAULT_BOUNDS) -> Image.Image:
    """Decode an image as upright RGB (EXIF orientation applied)."""
    try:
        with Image.open(path) as raw:
            image = ImageOps.exif_transpose(raw)
            image = image.convert("RGB")
    except FileNotFoundError as err:
        raise ImageError(f"image not found: {path}") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"cannot decode image {path}: {err}") from err
    bounds.check(image.width, image.height, path)
    return image


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` as the model will see it (EXIF-upright), reading only the header."""
    try:
        with Image.open(path) as raw:
            width, height = raw.size
            orientation = raw.getexif().get(0x0112, 1)
    except FileNotFoundError as err:
        raise ImageError(f"image not found: {path}") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"cannot decode image {path}: {err}") from err
    return (height, width) if orientation in _TRANSPOSED else (width, height)
