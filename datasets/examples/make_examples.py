"""Writes the example files for `dataset = "npz"` and `dataset = "csv"` from the
shipped UCI digits (datasets/digits/digits.csv.gz, CC BY 4.0): the first half
trains, the second tests, as greentrain's own `digits` data set splits them.

    python3 datasets/examples/make_examples.py    # needs numpy and pillow

digits_{train,test}.npz: `x` uint8 [n, 8, 8] (pixel intensities 0..16), `y` int64.
digits_{train,test}.csv: a header, columns p0..p63, then `digit` as class names
(zero, one, ...), to show labels mapped from names.
digits_images/{train,test}/<digit name>/<index>.png (every fourth .jpg): the
first 30 training and 15 test images of each digit, 8x8 grey, intensities
scaled to 0..255, for `dataset = "image_folder"`.
"""
import csv, gzip, os
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
rows = list(csv.reader(gzip.open(os.path.join(here, "..", "digits", "digits.csv.gz"), "rt")))
data = np.array([[int(v) for v in r] for r in rows], dtype=np.int64)
x, y = data[:, :64].astype(np.uint8).reshape(-1, 8, 8), data[:, 64]
half = len(y) // 2
names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
for split, sl in [("train", slice(0, half)), ("test", slice(half, None))]:
    np.savez_compressed(os.path.join(here, f"digits_{split}.npz"), x=x[sl], y=y[sl])
    with open(os.path.join(here, f"digits_{split}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"p{i}" for i in range(64)] + ["digit"])
        for xi, yi in zip(x[sl].reshape(-1, 64), y[sl]):
            w.writerow([int(v) for v in xi] + [names[yi]])

from PIL import Image
for split, sl, per_class in [("train", slice(0, half), 30), ("test", slice(half, None), 15)]:
    xs, ys = x[sl], y[sl]
    for digit, name in enumerate(names):
        folder = os.path.join(here, "digits_images", split, name)
        os.makedirs(folder, exist_ok=True)
        for k, i in enumerate(np.flatnonzero(ys == digit)[:per_class]):
            img = Image.fromarray((xs[i].astype(np.uint16) * 255 // 16).astype(np.uint8), mode="L")
            ext = "jpg" if k % 4 == 3 else "png"
            img.save(os.path.join(folder, f"{i:04d}.{ext}"), **({"quality": 95} if ext == "jpg" else {}))
