"""The Pillow side of `cargo bench --bench thumbnail` (which runs this script itself).

    python thumbnail_pillow.py make PATH        # writes the 12-megapixel test JPEG
    python thumbnail_pillow.py make-png PATH    # writes a 1000x700 drawing-like test PNG
    python thumbnail_pillow.py make-large-png PATH JPEG  # a 3840x2160 screenshot-like PNG
    python thumbnail_pillow.py bench PATH       # times Synapse's way of thumbnailing it
    python thumbnail_pillow.py sizes PATH       # bytes of Synapse's thumbnails of PATH

`bench` prints one JSON object of median seconds: `five_from_one_decode` (what Synapse does
on upload: one decode, the five default sizes resized with LANCZOS and saved, JPEG quality
80, or PNG from a PNG), `one_800x600` (what one thumbnail costs from the file: open,
decode, resize, save) and, for a JPEG, `decode_quarter` (libjpeg-turbo decoding at 1/4
scale, nothing else: what a single thumbnail from the file cannot go below).
`sizes` prints the byte length of each default size's thumbnail, keyed `WxH-method`, saved as
Synapse saves them (JPEG quality 80 from a JPEG, Pillow's default PNG from a PNG).
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


def make_png(path):
    # Flat colours with soft edges, as in a screenshot or a drawing: compresses well, so
    # an encoder's PNG settings show.
    w, h = 1000, 700
    img = Image.new("RGB", (w, h), (240, 240, 235))
    for i in range(12):
        box = Image.new("RGB", (180, 120), (30 + 18 * i, 90 + 9 * i, 200 - 12 * i))
        img.paste(box, (40 + (i % 4) * 235, 60 + (i // 4) * 210))
    img = img.resize((w // 2, h // 2), Image.LANCZOS).resize((w, h), Image.LANCZOS)
    img.save(path)


def make_large_png(path, photo):
    # A 4K screenshot: flat UI panels, thin lines like text, and a photo in a window (from
    # the 12-megapixel test JPEG), the kind of large PNG people post.
    w, h = 3840, 2160
    img = Image.new("RGB", (w, h), (250, 250, 248))
    for i in range(24):
        panel = Image.new("RGB", (560, 300), (40 + 8 * i, 120 + 4 * i, 220 - 7 * i))
        img.paste(panel, (60 + (i % 6) * 620, 80 + (i // 6) * 340))
    line = Image.new("RGB", (480, 3), (20, 20, 20))
    for y in range(1500, 2100, 12):
        for x in range(60, 1900, 520):
            img.paste(line.crop((0, 0, 200 + (x * 7 + y * 13) % 280, 3)), (x, y))
    with Image.open(photo) as p:
        img.paste(p.resize((1600, 1200), Image.LANCZOS), (2100, 880))
    img.save(path)


def aspect(src_w, src_h, max_w, max_h):
    # Synapse's Thumbnailer.aspect.
    if max_w * src_h < max_h * src_w:
        return max_w, max((max_w * src_h) // src_w, 1)
    return max((max_h * src_w) // src_h, 1), max_h


def thumbnail(img, w, h, method, form="JPEG"):
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
    if form == "JPEG":
        out.save(buf, "JPEG", quality=80)
    else:
        out.save(buf, "PNG")
    return buf.getvalue()


def form_of(img):
    return "JPEG" if img.format == "JPEG" else "PNG"


def five_from_one_decode(path):
    with Image.open(path) as img:
        img.load()
        for w, h, method in SIZES:
            thumbnail(img, w, h, method, form_of(img))


def one_800x600(path):
    with Image.open(path) as img:
        img.load()
        thumbnail(img, 800, 600, "scale", form_of(img))


def decode_quarter(path):
    # libjpeg-turbo's own scaled decode (IDCT at 1/4, as ours for 800x600): the floor for
    # any one thumbnail made from the file.
    with Image.open(path) as img:
        img.draft("RGB", (img.size[0] // 4, img.size[1] // 4))
        img.load()


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
    elif command == "make-png":
        make_png(path)
    elif command == "sizes":
        with Image.open(path) as img:
            img.load()
            form = "JPEG" if img.format == "JPEG" else "PNG"
            print(json.dumps({f"{w}x{h}-{m}": len(thumbnail(img, w, h, m, form)) for w, h, m in SIZES}))
    elif command == "make-large-png":
        make_large_png(path, sys.argv[3])
    elif command == "bench":
        with Image.open(path) as img:
            jpeg = img.format == "JPEG"
        result = {
            "pillow": Image.__version__,
            "five_from_one_decode": median_seconds(five_from_one_decode, path),
            "one_800x600": median_seconds(one_800x600, path),
        }
        if jpeg:
            result["decode_quarter"] = median_seconds(decode_quarter, path)
        print(json.dumps(result))
    else:
        sys.exit(f"unknown command {command}")
