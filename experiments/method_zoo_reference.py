"""The published numbers beside experiments.method_zoo's tables, and Review KD's per-pair
weights: each from the repository or paper named above it."""

# The published CIFAR-100 test accuracies (%) of HobbitLong/RepDistiller's README
# (Tian et al., "Contrastive Representation Distillation", ICLR 2020, tables 1-2):
# teacher, student alone, then per method. DKD is not in those tables.
_COLUMNS = ('teacher', 'alone', 'kd', 'at', 'sp', 'rkd', 'pkt', 'nst')
_REFERENCE_ROWS = {
    ('wrn_40_2', 'wrn_16_2'): (75.61, 73.26, 74.92, 74.08, 73.83, 73.35, 74.54, 73.68),
    ('wrn_40_2', 'wrn_40_1'): (75.61, 71.98, 73.54, 72.77, 72.43, 72.22, 73.45, 72.24),
    ('resnet56', 'resnet20'): (72.34, 69.06, 70.66, 70.55, 69.67, 69.61, 70.34, 69.60),
    ('resnet110', 'resnet20'): (74.31, 69.06, 70.67, 70.22, 70.04, 69.25, 70.25, 69.53),
    ('resnet110', 'resnet32'): (74.31, 71.14, 73.08, 72.31, 72.69, 71.82, 72.61, 71.96),
    ('resnet32x4', 'resnet8x4'): (79.42, 72.50, 73.33, 73.44, 72.94, 71.90, 73.64, 73.30),
    ('vgg13', 'vgg8'): (74.64, 70.36, 72.98, 71.43, 72.68, 71.48, 72.88, 71.53),
    ('vgg13', 'mobilenetv2'): (74.64, 64.60, 67.37, 59.40, 66.30, 64.52, 67.13, 58.16),
    ('resnet50', 'mobilenetv2'): (79.34, 64.60, 67.35, 58.58, 68.08, 64.43, 66.52, 64.96),
    ('resnet50', 'vgg8'): (79.34, 70.36, 73.81, 71.84, 73.34, 71.50, 73.01, 71.28),
    ('resnet32x4', 'shufflenetv1'): (79.42, 70.50, 74.07, 71.73, 73.48, 72.28, 74.10, 74.12),
    ('resnet32x4', 'shufflenetv2'): (79.42, 71.82, 74.45, 72.73, 74.56, 73.21, 74.69, 74.68),
    ('wrn_40_2', 'shufflenetv1'): (75.61, 70.50, 74.83, 73.32, 74.52, 72.21, 73.89, 74.89),
}
# The same README's rows for the methods with parts of their own (FSP: homogeneous pairs
# only, and not wrn_40_2 -> wrn_40_1, which the README leaves at 0.00).
_MORE_COLUMNS = ('fitnet', 'cc', 'vid', 'ab', 'ft', 'fsp', 'crd')
_MORE_ROWS = {
    ('wrn_40_2', 'wrn_16_2'): (73.58, 73.56, 74.11, 72.50, 73.25, 72.91, 75.48),
    ('wrn_40_2', 'wrn_40_1'): (72.24, 72.21, 73.30, 72.38, 71.59, None, 74.14),
    ('resnet56', 'resnet20'): (69.21, 69.63, 70.38, 69.47, 69.84, 69.95, 71.16),
    ('resnet110', 'resnet20'): (68.99, 69.48, 70.16, 69.53, 70.22, 70.11, 71.46),
    ('resnet110', 'resnet32'): (71.06, 71.48, 72.61, 70.98, 72.37, 71.89, 73.48),
    ('resnet32x4', 'resnet8x4'): (73.50, 72.97, 73.09, 73.17, 72.86, 72.62, 75.51),
    ('vgg13', 'vgg8'): (71.02, 70.71, 71.23, 70.94, 70.58, 70.23, 73.94),
    ('vgg13', 'mobilenetv2'): (64.14, 64.86, 65.56, 66.06, 61.78, None, 69.73),
    ('resnet50', 'mobilenetv2'): (63.16, 65.43, 67.57, 67.20, 60.99, None, 69.11),
    ('resnet50', 'vgg8'): (70.69, 70.25, 70.30, 70.65, 70.29, None, 74.30),
    ('resnet32x4', 'shufflenetv1'): (73.59, 71.14, 73.38, 73.55, 71.75, None, 75.11),
    ('resnet32x4', 'shufflenetv2'): (73.54, 71.29, 73.40, 74.31, 72.50, None, 75.65),
    ('wrn_40_2', 'shufflenetv1'): (73.73, 71.38, 73.61, 73.34, 72.03, None, 76.05),
}
# DKD's CIFAR-100 accuracies in megvii-research/mdistiller's README (Zhao et al., CVPR 2022),
# for the pairs of this table that it lists.
_DKD = {('resnet56', 'resnet20'): 71.97, ('resnet110', 'resnet32'): 74.11,
        ('resnet32x4', 'resnet8x4'): 76.32, ('wrn_40_2', 'wrn_16_2'): 76.23,
        ('wrn_40_2', 'wrn_40_1'): 74.81, ('vgg13', 'vgg8'): 74.68,
        ('resnet32x4', 'shufflenetv1'): 76.45, ('wrn_40_2', 'shufflenetv1'): 76.70,
        ('vgg13', 'mobilenetv2'): 69.71, ('resnet50', 'mobilenetv2'): 70.35}
# The later logit methods' CIFAR-100 accuracies, for the pairs of this table their authors'
# READMEs list: DIST (hunto/DIST_KD, mean of their runs), KD+DOT (megvii-research/mdistiller),
# CTKD, KD+LS, DKD+LS, MLKD and MLKD+LS (sunshangquan/logit-standardization-KD's README
# tables).
_LATER_COLUMNS = ('dist', 'ctkd', 'kd+dot', 'kd+ls', 'dkd+ls', 'mlkd', 'mlkd+ls')
_LATER = {
    ('resnet32x4', 'resnet8x4'): (76.31, 73.39, 75.12, 76.62, 77.01, 77.08, 78.28),
    ('vgg13', 'vgg8'): (None, 73.52, 73.77, 74.36, 74.81, 75.18, 75.22),
    ('wrn_40_2', 'wrn_40_1'): (74.43, 73.93, None, 74.37, 74.89, 75.35, 75.56),
    ('wrn_40_2', 'wrn_16_2'): (None, 75.45, None, 76.11, 76.39, 76.63, 76.95),
    ('resnet56', 'resnet20'): (71.75, 71.19, None, 71.43, 72.32, 72.19, 72.33),
    ('resnet110', 'resnet32'): (None, 73.52, None, 74.17, 74.29, 74.11, 74.32),
    ('resnet110', 'resnet20'): (None, 70.99, None, 71.48, 71.85, 71.89, 72.27),
    ('resnet32x4', 'shufflenetv2'): (77.35, 75.37, 75.55, 75.56, 77.37, 78.44, 78.76),
    ('resnet32x4', 'shufflenetv1'): (76.34, None, None, None, None, None, None),
    ('vgg13', 'mobilenetv2'): (None, 68.50, None, 68.61, 69.98, 70.57, 70.94),
    ('resnet50', 'mobilenetv2'): (68.66, 68.67, None, 69.02, 70.45, 71.04, 71.19),
}
REFERENCE = {pair: {**dict(zip(_COLUMNS, values)), **dict(zip(_MORE_COLUMNS, _MORE_ROWS[pair])),
                    'dkd': _DKD.get(pair),
                    **dict(zip(_LATER_COLUMNS, _LATER.get(pair, (None,) * 7)))}
             for pair, values in _REFERENCE_ROWS.items()}
REFERENCE_ORDER = ('teacher', 'alone', 'kd', 'fitnet', 'at', 'sp', 'cc', 'vid', 'rkd', 'pkt',
                    'ab', 'ft', 'fsp', 'nst', 'crd', 'dkd', *_LATER_COLUMNS)
# Review KD's weight per pair in its authors' CIFAR-100 script
# (dvlab-research/ReviewKD, CIFAR-100/script/reviewKD.sh); other pairs: mdistiller's default 1.
REVIEWKD_WEIGHTS = {('wrn_40_2', 'wrn_16_2'): 5.0, ('wrn_40_2', 'wrn_40_1'): 5.0,
                    ('wrn_40_2', 'shufflenetv1'): 5.0, ('resnet32x4', 'resnet8x4'): 5.0,
                    ('resnet32x4', 'shufflenetv1'): 5.0, ('resnet32x4', 'shufflenetv2'): 8.0,
                    ('resnet56', 'resnet20'): 0.6, ('resnet110', 'resnet32'): 1.0}
