"""Distillation methods beyond logit KD, as pure functions of student and teacher outputs.

Each loss takes the student's and the teacher's outputs (features are Flax's
NHWC, embeddings [B, D], logits [B, K]) and keyword-only hyper-parameters whose
defaults are the published ones, and reduces the way the reference
implementations (RepDistiller, mdistiller) do, so that numbers and loss
weights carry over. `PUBLISHED_WEIGHTS` holds the weight each method's loss
gets in RepDistiller's `train_student.py` (its `-b`). `config.method.name`
adds one of them to a run's objective (`kdjax.methods.registry`).

  at_loss    attention transfer (Zagoruyko & Komodakis, 2017), one pair of maps
  sp_loss    similarity-preserving KD (Tung & Mori, 2019), one pair
  nst_loss   neuron selectivity transfer (Huang & Wang, 2017), polynomial kernel
  pkt_loss   probabilistic knowledge transfer (Passalis & Tefas, 2018)
  rkd_loss   relational KD, distance + angle (Park et al., 2019)
  dkd_loss   decoupled KD, target + non-target (Zhao et al., 2022)
  dist_loss  DIST, inter- and intra-class Pearson relations (Huang et al., 2022)
  mlkd_loss  multi-level logit distillation: instance, batch and class alignment at
             several temperatures on a weak and a strong view (Jin et al., 2023)
  standardize  logit standardisation, a z-score per example (Sun et al., 2024;
             `config.distill.standardize` applies it inside logit KD and DKD)

Methods with trainable parts or state of their own (FitNets, CRD, VID, CC,
FSP, AB, FT) are in `kdjax.methods.trained`, Review KD in `kdjax.methods.review`,
CTKD's learned temperature (Li et al., 2023) in `kdjax.methods.ctkd`.
"""

from kdjax.methods.features import adaptive_avg_pool, at_loss, nst_loss, sp_loss
from kdjax.losses import standardize
from kdjax.methods.logits import dist_loss, dkd_loss, pearson_correlation
from kdjax.methods.registry import METHODS, Method, get
from kdjax.methods.relations import pkt_loss, rkd_loss
from kdjax.methods import ctkd
from kdjax.methods import mlkd
from kdjax.methods.mlkd import mlkd_loss
from kdjax.methods import trained
from kdjax.methods import review  # registers 'reviewkd' among the TRAINED methods
from kdjax.methods.review import hcl_loss
from kdjax.methods.trained import TRAINED, TrainedMethod

# RepDistiller's weight of each method's loss (train_student.py, `-b`), with
# cross-entropy weight 1 and no logit KD term beside it.
PUBLISHED_WEIGHTS = {
    'fitnet': 100.0, 'at': 1000.0, 'sp': 3000.0, 'cc': 0.02, 'vid': 1.0, 'rkd': 1.0,
    'pkt': 30000.0, 'ab': 1.0, 'ft': 200.0, 'fsp': 50.0, 'nst': 50.0, 'crd': 0.8,
}

__all__ = ['METHODS', 'Method', 'PUBLISHED_WEIGHTS', 'TRAINED', 'TrainedMethod', 'trained',
           'adaptive_avg_pool', 'at_loss', 'ctkd', 'dist_loss', 'dkd_loss', 'hcl_loss', 'mlkd',
           'mlkd_loss', 'review',
           'get', 'nst_loss', 'pearson_correlation', 'pkt_loss', 'rkd_loss', 'sp_loss',
           'standardize']
