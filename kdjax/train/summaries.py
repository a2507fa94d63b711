"""TensorBoard event files, written without TensorFlow.

A run's scalars (loss, accuracies, learning rate, per member of a sweep) go
to `WORKDIR/events.out.tfevents.*`, which TensorBoard reads as it reads any
TensorFlow summary file: TFRecord framing (length, masked CRC-32C, payload,
masked CRC-32C) around `Event` protocol buffers, whose definitions ship with
the tensorboard package. Importing TensorFlow (about 3 s, as clu's writer
does) is left to runs that ask for it: `config.summary_writer = 'clu'`.
"""

import os
import socket
import struct
import time

from kdjax.data import _tensorflow

_FILE_VERSION = 'brain.Event:2'


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), as TFRecord files use it."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
  """One TFRecord: the payload framed with its length and two masked checksums."""
  length = struct.pack('<Q', len(payload))
  return (length + struct.pack('<I', _masked(crc32c(length))) + payload +
          struct.pack('<I', _masked(crc32c(payload))))


class EventWriter:
  """Writes scalars to a TensorBoard event file in `logdir` (clu's MetricWriter calls)."""

  def __init__(self, logdir: str):
    from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=import-outside-toplevel
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    os.makedirs(logdir, exist_ok=True)
    name = f'events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}.kdjax'
    self._file = open(os.path.join(logdir, name), 'ab')  # pylint: disable=consider-using-with
    self._write(self._event(wall_time=time.time(), file_version=_FILE_VERSION))

  def _write(self, event) -> None:
    self._file.write(tfrecord(event.SerializeToString()))

  def write_scalars(self, step: int, scalars: dict) -> None:
    values = [self._summary.Value(tag=tag, simple_value=float(value))
              for tag, value in scalars.items()]
    self._write(self._event(wall_time=time.time(), step=int(step),
                            summary=self._summary(value=values)))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class NoWriter:
  """Writes nothing (processes other than 0, or `summary_writer='none'`)."""

  def write_scalars(self, step: int, scalars: dict) -> None:
    del step, scalars

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def open_writer(kind: str, logdir: str, *, process_index: int):
  """The summary writer `config.summary_writer` names; only process 0 writes."""
  if kind == 'none' or process_index > 0:
    return NoWriter()
  if kind == 'clu':
    # clu's writer imports TensorFlow; loaded quietly first so that nothing
    # but kdjax's own lines reach stderr.
    _tensorflow.load()
    from clu import metric_writers  # pylint: disable=import-outside-toplevel
    return metric_writers.create_default_writer(logdir)
  return EventWriter(logdir)
