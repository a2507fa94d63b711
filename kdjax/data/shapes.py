r"""Writes a folder of drawn-shape images, one sub-directory per class: a dataset to try
`config.dataset='folder:DIR'` on (docs/custom.md).

  python -m kdjax.data.shapes --out=DIR [--per_class=200] [--size=32] [--seed=0]
      [--test_per_class=0]

Each image is a filled circle, square, triangle or cross of random size,
position, angle and bright colour on a dark background colour, with pixel
noise, saved
as PNG in DIR/CLASS/ (or DIR/train/CLASS/ and DIR/test/CLASS/ with
--test_per_class > 0). The same seed writes the same pixels.
"""

import argparse
import os
import sys

import numpy as np

CLASSES = ('circle', 'square', 'triangle', 'cross')


def _polygon(cx, cy, points, angle):
  """`points` (offsets from the centre) turned by `angle` radians about (cx, cy)."""
  c, s = np.cos(angle), np.sin(angle)
  return [(cx + c * x - s * y, cy + s * x + c * y) for x, y in points]


def _draw(kind: str, size: int, rng: np.random.Generator):
  """One RGB image (PIL) of `kind`: random size, position, angle and colours, and noise."""
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  background = tuple(int(v) for v in rng.integers(0, 110, 3))  # dark
  colour = tuple(int(v) for v in rng.integers(140, 256, 3))  # bright
  image = Image.new('RGB', (size, size), background)
  draw = ImageDraw.Draw(image)
  r = rng.uniform(0.2, 0.4) * size
  cx, cy = size / 2 + rng.uniform(-0.2, 0.2, 2) * size
  angle = rng.uniform(0, 2 * np.pi)
  if kind == 'circle':
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
  elif kind == 'square':
    draw.polygon(_polygon(cx, cy, [(-r, -r), (r, -r), (r, r), (-r, r)], angle), fill=colour)
  elif kind == 'triangle':
    corners = [(r * np.cos(a), r * np.sin(a)) for a in (0, 2 * np.pi / 3, 4 * np.pi / 3)]
    draw.polygon(_polygon(cx, cy, corners, angle), fill=colour)
  else:
    bar = r / 3
    for turn in (0, np.pi / 2):
      draw.polygon(_polygon(cx, cy, [(-r, -bar), (r, -bar), (r, bar), (-r, bar)],
                            angle + turn), fill=colour)
  noise = rng.integers(-50, 51, (size, size, 3))
  pixels = np.clip(np.asarray(image, np.int32) + noise, 0, 255).astype(np.uint8)
  return Image.fromarray(pixels)


def write(out: str, *, per_class: int, size: int = 32, seed: int = 0,
          test_per_class: int = 0) -> int:
  """Writes the images; returns how many. DIR/CLASS/i.png, or DIR/{train,test}/CLASS/i.png."""
  rng = np.random.default_rng(seed)
  parts = [('train', per_class), ('test', test_per_class)] if test_per_class else [('', per_class)]
  written = 0
  for part, count in parts:
    for kind in CLASSES:
      folder = os.path.join(out, part, kind)
      os.makedirs(folder, exist_ok=True)
      for index in range(count):
        _draw(kind, size, rng).save(os.path.join(folder, f'{index:05d}.png'))
        written += 1
  return written


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='folder to write (created)')
  parser.add_argument('--per_class', type=int, default=200, help='images per class')
  parser.add_argument('--size', type=int, default=32, help='side in pixels')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--test_per_class', type=int, default=0,
                      help='> 0: write train/ and test/ folders, this many test images each')
  args = parser.parse_args(argv)
  if args.per_class < 1 or args.size < 8 or args.test_per_class < 0:
    print('error: --per_class must be >= 1, --size >= 8 and --test_per_class >= 0',
          file=sys.stderr)
    return 2
  count = write(args.out, per_class=args.per_class, size=args.size, seed=args.seed,
                test_per_class=args.test_per_class)
  print(f'wrote {count} images of {len(CLASSES)} classes ({", ".join(CLASSES)}) to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
