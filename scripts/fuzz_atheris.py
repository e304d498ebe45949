"""Coverage-guided fuzzing of image reading with atheris (optional; not part of CI, which runs tests/test_fuzz.py).

    pip install atheris
    python scripts/fuzz_atheris.py -max_total_time=300          # or -atheris_runs=50000

The seed corpus (valid files of every format and mode this package reads, written into a temporary folder) is
mutated by libFuzzer, guided by the coverage of Pillow's and scl-lle's Python code. Every input must either read
as a consistent picture or fail with :class:`scl_lle.io.image.ImageReadError`; any other exception is a crash,
reported by libFuzzer with the input saved as ``crash-<sha1>`` in the current folder.
"""

from __future__ import annotations

import io
import sys
import tempfile
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["PIL", "scl_lle"]):
    import numpy as np
    from PIL import Image

    Image.init()  # import every format plugin now, so that their code is instrumented too
    from scl_lle.io.image import ImageReadError, read_image

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"]
FORMATS = ["PNG", "JPEG", "TIFF", "BMP", "WEBP", "PPM", "TGA"]
MAX_PIXELS = 1 << 20
WORK = Path(tempfile.mkdtemp(prefix="scl-lle-fuzz-"))


def _seed_corpus(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for fmt in FORMATS:
        for mode in MODES:
            base = Image.fromarray(rng.integers(0, 90, (13, 17, 3), dtype=np.uint8))
            image = base.convert("L").convert(mode) if mode in ("I;16", "I", "F") else base.convert(mode)
            buffer = io.BytesIO()
            try:
                image.save(buffer, fmt)
            except (OSError, ValueError, KeyError):
                continue
            (folder / f"{fmt}-{mode.replace(';', '_')}").write_bytes(buffer.getvalue())


def test_one_input(data: bytes) -> None:
    path = WORK / "input"
    path.write_bytes(data)
    try:
        picture = read_image(path, max_pixels=MAX_PIXELS)
    except ImageReadError as error:
        if not str(error).strip():
            raise AssertionError("an ImageReadError without a reason") from None
        return
    height, width = picture.pixels.shape[:2]
    if width < 1 or height < 1 or picture.pixels.dtype not in (np.uint8, np.uint16, np.float32):
        raise AssertionError(f"inconsistent picture {picture.pixels.shape} {picture.pixels.dtype}")
    if picture.alpha is not None and picture.alpha.shape != (height, width):
        raise AssertionError("alpha does not match the pixels")


def main() -> None:
    warnings.simplefilter("ignore")  # Pillow warns about the corrupt metadata it skips
    corpus = WORK / "corpus"
    corpus.mkdir()
    _seed_corpus(corpus)
    atheris.Setup([*sys.argv, str(corpus)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
