r"""A CIFAR-10 student distilled from a finished teacher run (Hinton KD, T = 4, alpha = 0.9).

  python -m kdjax.main --config=configs/cifar_distill.py --workdir=runs/cifar_kd_resnet20 \
      --config.teacher.workdir=runs/cifar_resnet56

The recipe of configs/cifar_resnet.py. The teacher's input is augmented, so
it runs inside the compiled step (no cached logits). Sweep a grid in one
program with e.g. --config.sweep.temperature='(1.,5.,10.)' --config.sweep.alpha='(0.1,0.5,0.9)'.
"""

import ml_collections

from configs import cifar_resnet


def get_config() -> ml_collections.ConfigDict:
  c = cifar_resnet.get_config()
  c.model.name = 'resnet20'
  c.teacher.workdir = 'runs/cifar_resnet56'
  c.distill.temperature = 4.0
  c.distill.alpha = 0.9
  return c
