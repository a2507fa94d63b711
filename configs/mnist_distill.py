r"""The 800-800 net trained on the teacher's soft targets at T = 20.

  python -m kdjax.main --config=configs/mnist_distill.py --workdir=runs/mnist_distill \
      --config.teacher.workdir=runs/mnist_teacher

alpha = 1: soft targets only, as in Hinton et al. §3 (paper: 74 test errors);
set --config.distill.alpha=0.9 for the mixture with the hard labels.
"""

import ml_collections

from configs import mnist_student


def get_config() -> ml_collections.ConfigDict:
  c = mnist_student.get_config()
  c.teacher.workdir = 'runs/mnist_teacher'
  c.teacher.cache = 'auto'
  c.distill.temperature = 20.0
  c.distill.alpha = 1.0
  c.distill.kind = 'kl'
  return c
