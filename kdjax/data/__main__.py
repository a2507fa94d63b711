"""Imports and lists datasets in a TFDS data directory.

  python -m kdjax.data import mnist fashion_mnist [--data_dir=DIR]
  python -m kdjax.data list [--data_dir=DIR]

DIR defaults to $TFDS_DATA_DIR, else ~/tensorflow_datasets.
"""

import argparse
import os
import sys

from kdjax import caching
from kdjax.data import catalog
from kdjax.data.importer import import_dataset
from kdjax.data.loading import default_data_dir, is_prepared, load
from kdjax.errors import KDError


def _list_datasets(data_dir: str) -> str:
  rows = [('name', 'classes', 'prepared', 'offline import')]
  for info in catalog.DATASETS.values():
    prepared = is_prepared(info.name, data_dir)
    rows.append((info.name, str(info.num_classes), 'yes' if prepared else 'no',
                 'yes' if info.importable else 'no'))
  widths = [max(len(row[column]) for row in rows) for column in range(4)]
  lines = [f'datasets in {data_dir}:']
  lines += ['  '.join(cell.ljust(width) for cell, width in zip(row, widths))
            .rstrip() for row in rows]
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  """Runs the command line; returns the process exit status."""
  parser = argparse.ArgumentParser(
      prog='python -m kdjax.data', description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest='command', required=True)
  import_parser = commands.add_parser(
      'import', help='build datasets offline from local copies')
  import_parser.add_argument('names', nargs='+', metavar='NAME')
  import_parser.add_argument(
      '--source', default=None,
      help='the local copy to import from, for a single NAME: the MNIST pickle '
      '(mnist.pkl.gz) or the Fashion-MNIST IDX folder (default: the installed copy)')
  list_parser = commands.add_parser(
      'list', help='show datasets, whether prepared, whether importable')
  for subparser in (import_parser, list_parser):
    subparser.add_argument(
        '--data_dir', default=None,
        help='TFDS data directory (default: $TFDS_DATA_DIR or '
        '~/tensorflow_datasets)')
  args = parser.parse_args(argv)
  # TensorFlow reads this when it first loads, which tensorflow_datasets puts
  # off until a dataset is read or written; it keeps TensorFlow's INFO lines
  # off stderr.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  data_dir = args.data_dir or default_data_dir()
  try:
    if args.command == 'list':
      print(_list_datasets(data_dir))
    else:
      # Check every name first so a typo fails before a long import starts.
      for name in args.names:
        catalog.get_info(name)
      if args.source and len(args.names) != 1:
        raise KDError('--source names the local copy of one dataset; import one NAME at a time')
      for name in args.names:
        print(import_dataset(name, data_dir=data_dir, source=args.source), flush=True)
        # Decoded once now, so that the first run maps it instead (kdjax.caching).
        if caching.data_dir() is not None:
          load(name, data_dir=data_dir)
  except KDError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
