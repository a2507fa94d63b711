"""kdjax's tests.

Every program the tests compile, in the test process and in the processes
the tests start, is compiled at XLA's backend optimisation level 0
(`XLA_FLAGS`, set by conftest.py): the suite's programs are small and
compiled once or twice, so compiling dominates and level 0 compiles several
times faster (a `jax.random.normal`: 0.25 s against 2 s on a 2-core CPU).
The CPU backend's loop-based ("legacy") fusion emitters replace its newer
MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`), and each program
is generated as one LLVM module (`--xla_cpu_parallel_codegen_split_count=1`:
the two test workers already use both cores): a ResNet-8 KD train step
compiles in 0.17 s against 0.65 s, a VGG-8 step in 0.19 s against 0.94 s
(`scripts/compile_times.py` prints the table for any set of flags).
They change how fast the code runs, not what it computes (the same values
up to float rounding: tests/test_reference.py holds every loss to its
recorded value); two runs a test compares are compiled alike.

For the same reason convolutions on the CPU are XLA's own in the tests
($KDJAX_CPU_CONV=xla, also set by conftest.py unless set already): kdjax's
default CPU convolution (`kdjax.models.layers.conv_general_dilated`, shifted
slices and one matrix product) trains faster at full size but is a larger
program, and the tests' tiny networks spend their time compiling (a narrowed
ResNet's epoch program: 2.2 s against 3.8 s). The same values up to float
rounding: tests/test_conv.py holds kdjax's convolution to XLA's (values and
gradients, strides, groups, depthwise), and tests/test_method_steps.py trains
every method's compiled step with kdjax's convolution (`patches_conv`).
"""

import os

XLA_FLAGS = ('--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false '
             '--xla_cpu_parallel_codegen_split_count=1')
# kdjax.models.layers.CPU_CONV_ENV and the value the tests give it.
CPU_CONV_ENV, CPU_CONV = 'KDJAX_CPU_CONV', 'xla'


def xla_flags(*extra: str) -> str:
  """XLA_FLAGS for a process a test starts: the test process's flags and `extra`."""
  return ' '.join((os.environ.get('XLA_FLAGS', XLA_FLAGS), *extra))
