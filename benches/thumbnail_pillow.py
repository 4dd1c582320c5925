"""The Pillow side of `cargo bench --bench thumbnail` (which runs this script itself).

    python thumbnail_pillow.py make PATH    # writes the 12-megapixel test JPEG
    python thumbnail_pillow.py bench PATH   # times Synapse's way of thumbnailing it

`bench` prints one JSON object of median seconds: `five_from_one_decode` (what Synapse does
on upload: one decode, the five default sizes resized with LANCZOS and saved, JPEG quality
80) and `one_800x600` (what one thumbnail costs from the file: open, decode, resize, save).
"""

import io
import json
import statistics
import sys
import time

from PIL import Image

RUNS = 5
# Synapse's default thumbnail_sizes.
SIZES = [(32, 32, "crop"), (96, 96, "crop"), (320, 240, "scale"), (640, 480, "scale"),
         (800, 600, "scale")]


def make(path):
    # Something photo-like: smooth gradients, fractal detail and noise, so the JPEG
    # costs what a camera picture costs to decode.
    w, h = 4000, 3000
    r = Image.linear_gradient("L").resize((w, h))
    g = Image.effect_mandelbrot((w, h), (-2.2, -1.2, 1.0, 1.2), 60)
    b = Image.effect_noise((w, h), 40)
    Image.merge("RGB", (r, g, b)).save(path, quality=90)


def aspect(src_w, src_h, max_w, max_h):
    # Synapse's Thumbnailer.aspect.
    if max_w * src_h < max_h * src_w:
        return max_w, max((max_w * src_h) // src_w, 1)
    return max((max_h * src_w) // src_h, 1), max_h


def thumbnail(img, w, h, method):
    src_w, src_h = img.size
    if method == "crop":
        if w * src_h > h * src_w:
            sw, sh = w, (w * src_h) // src_w
            top = (sh - h) // 2
            box = (0, top, w, top + h)
        else:
            sw, sh = (h * src_w) // src_h, h
            left = (sw - w) // 2
            box = (left, 0, left + w, h)
        out = img.resize((sw, sh), Image.LANCZOS).crop(box)
    else:
        tw, th = aspect(src_w, src_h, w, h)
        out = img.resize((min(src_w, tw), min(src_h, th)), Image.LANCZOS)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def five_from_one_decode(path):
    with Image.open(path) as img:
        img.load()
        for w, h, method in SIZES:
            thumbnail(img, w, h, method)


def one_800x600(path):
    with Image.open(path) as img:
        img.load()
        thumbnail(img, 800, 600, "scale")


def median_seconds(fn, path):
    fn(path)  # warm up the page cache and Pillow's imports
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


if __name__ == "__main__":
    command, path = sys.argv[1], sys.argv[2]
    if command == "make":
        make(path)
    elif command == "bench":
        print(json.dumps({
            "pillow": Image.__version__,
            "five_from_one_decode": median_seconds(five_from_one_decode, path),
            "one_800x600": median_seconds(one_800x600, path),
        }))
    else:
        sys.exit(f"unknown command {command}")
