"""What an image file on disk really is: its stored size, EXIF orientation, whether it decodes.

No TensorFlow here: this runs in worker processes too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ORIENTATION_TAG = 0x0112
QUARTER_TURN_ORIENTATIONS = (5, 6, 7, 8)  # these swap width and height


class ImageFileError(ValueError):
    """The file is missing, unreadable, or does not decode."""


@dataclass(frozen=True)
class ImageProbe:
    width: int  # as stored
    height: int
    orientation: int  # EXIF orientation, 1 when absent or invalid
    format: str | None  # PIL's name: "JPEG", "PNG", ...

    @property
    def stored_size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def displayed_size(self) -> tuple[int, int]:
        """The size a viewer that applies EXIF (CVAT does) shows."""
        if self.orientation in QUARTER_TURN_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height


def check_decodes(data: bytes) -> None:
    """Decode the whole file once: a truncated or corrupt file fails here, not in training."""
    probe = Image.open(io.BytesIO(data))
    if probe.format in ("JPEG", "MPO"):
        # Decoding at 1/8 scale still reads every entropy-coded block, at a fraction of the cost.
        probe.draft(probe.mode, (max(1, probe.width // 8), max(1, probe.height // 8)))
    probe.load()


def probe_image(path: str | Path, data: bytes | None = None) -> ImageProbe:
    """Size, orientation and format of an image file, after checking that it decodes."""
    try:
        if data is None:
            data = Path(path).read_bytes()
        picture = Image.open(io.BytesIO(data))
        check_decodes(data)
        orientation = picture.getexif().get(ORIENTATION_TAG, 1)
    except FileNotFoundError:
        raise ImageFileError(f"{path}: image file not found") from None
    except Exception as e:  # PIL raises many kinds for corrupt files
        raise ImageFileError(f"{path}: the image cannot be read ({e})") from None
    if orientation not in range(1, 9):
        orientation = 1
    return ImageProbe(picture.width, picture.height, orientation, picture.format)
