r"""An ensemble's knowledge in one network (Hinton, Vinyals & Dean 2015, §1, §4 and §6).

  python -m experiments.ensembles --preset=cpu --workdir=runs/ensembles_cpu
  python -m experiments.ensembles --preset=mnist --workdir=runs/ensembles_mnist
  python -m experiments.ensembles --preset=fashion_mnist --workdir=runs/ensembles_fmnist

Stages, each a kdjax run in its own sub-directory (finished stages are skipped):
  teachers          K MLPs (Hinton's MNIST teacher recipe: dropout, max-norm, Adam) as
                    ONE seed sweep: K initialisations and data orders, one program
  alone             a network of one teacher's size on the labels (3 seeds)
  one_teacher       the same network distilled from teacher seed 0, T swept
  ensemble_T<T>     the same network distilled from the ensemble of all K teachers
                    (the mean of their probabilities at T, `teacher.ensemble='probs'`)
  subset_alone      §6: the network on 3 % of the training set, hard labels
  subset_ensemble   §6: the same 3 %, with the full-data ensemble's soft targets
Students use seeds 100, 101, 102, none of the teachers'. T of each distilled
student is chosen on the validation split (the seeded 10 % every stage holds
out); §6's soft-target student uses the T chosen for the ensemble's student.
The 3 % runs train as many steps as the full-data runs (more epochs) and report
their final epoch and, as Hinton's hard-label run did, the epoch chosen on
validation (early stopping). Writes report.md and report.json.

Hinton's speech table (§4): baseline 58.9 %, 10-model ensemble 61.1 %, distilled
single model 60.8 % frame accuracy: the student keeps 86 % of the ensemble's gain.
§6: 3 % of the data, hard labels 44.5 %, soft targets 57.0 %, all of it 58.9 %.
"""

import os

import ml_collections

from experiments import common, ensembles_report
from kdjax import report
from kdjax.errors import ConfigError

STUDENT_SEED = 100  # students count up from here: none shares a teacher's seed

PRESETS = {
    'mnist': dict(dataset='mnist', epochs=30, teachers=10, seeds=3, hidden=(1200, 1200),
                  max_shift=2, temperatures=(2.0, 4.0, 8.0, 20.0), subset=0.03),
    'fashion_mnist': dict(dataset='fashion_mnist', epochs=30, teachers=10, seeds=3,
                          hidden=(1200, 1200), max_shift=2, temperatures=(2.0, 4.0, 8.0, 20.0),
                          subset=0.03),
    # Inputs not shifted: the ensemble's outputs are cached once per stage.
    'cpu': dict(dataset='mnist', epochs=10, teachers=10, seeds=3, hidden=(256, 256),
                max_shift=0, train_examples=10000, temperatures=(2.0, 5.0, 10.0), subset=0.03),
}

HINTON = {'baseline': 58.9, 'ensemble': 61.1, 'distilled': 60.8, 'subset_hard': 44.5,
          'subset_soft': 57.0}


def _config(stages: common.Stages, preset: dict, *, seeds: int, first_seed: int,
            teacher: str = '', temperature: float | None = None,
            subset: tuple[int, int] | None = None) -> ml_collections.ConfigDict:
  """A run of the preset's network: Hinton's MNIST teacher recipe at the preset's size.

  With `teacher`, distilled at `temperature` with the shared --alpha; with `subset`
  (examples, the full-data run's examples), on that many training examples for as many
  steps as the full-data run.
  """
  from configs import mnist_teacher
  setup = stages.setup
  c = mnist_teacher.get_config()
  c.dataset, c.data_dir = setup.dataset, setup.data_dir
  c.model.hidden = tuple(preset['hidden'])
  c.augment.max_shift = preset['max_shift']
  c.num_epochs = setup.epochs
  c.eval_every = max(1, c.num_epochs // 5)
  c.checkpoint_every = c.eval_every
  c.train_examples = setup.train_examples
  c.validation_fraction, c.validation_seed = common.VALIDATION_FRACTION, common.VALIDATION_SEED
  c.seed = c.data_seed = first_seed
  c.sweep.seed = tuple(range(first_seed, first_seed + seeds)) if seeds > 1 else ()
  c.sweep.mode = setup.sweep_mode
  if teacher:
    c.teacher.workdir = teacher
    c.teacher.ensemble = 'probs'
    c.distill.temperature = float(temperature)
    c.distill.alpha = common.ALPHA.value
  c = common.shrunk(c) if setup.quick else c
  if subset:
    small, full = subset
    c.train_examples = small
    if not setup.quick:  # as many steps as the full-data run: more epochs
      full_steps = c.num_epochs * (full // c.batch_size)
      c.num_epochs = max(c.num_epochs, -(-full_steps // max(1, small // c.batch_size)))
    c.eval_every = c.checkpoint_every = max(1, c.num_epochs // 5)
  return c


def _full_train_count(teachers: dict) -> int:
  """How many training examples the full-data runs saw."""
  first = common.members(teachers)[0]['workdir']
  return report.read_json(os.path.join(first, 'results.json'))['num_train_examples']


def body(stages: common.Stages, preset: dict) -> str:
  if preset['teachers'] < 2:
    raise ConfigError(f'the preset\'s teachers={preset["teachers"]} must be >= 2')
  seeds, temperatures = stages.setup.seeds, tuple(preset['temperatures'])
  student = lambda **kw: _config(stages, preset, seeds=seeds,  # noqa: E731
                                 first_seed=STUDENT_SEED, **kw)
  teachers = stages.run('teachers', _config(stages, preset, seeds=preset['teachers'],
                                            first_seed=0))
  alone = stages.run('alone', student())
  one_config = student(teacher=stages.teacher_of('teachers'), temperature=temperatures[0])
  one_config.sweep.temperature = temperatures if len(temperatures) > 1 else ()
  one = stages.run('one_teacher', one_config)
  ensemble = {t: stages.run(f'ensemble_T{t:g}', student(teacher=teachers['workdir'],
                                                         temperature=t))
              for t in temperatures}
  one_t, one_selection, _ = common.select(
      'student from one teacher: T', common.group(common.members(one), ('temperature',)),
      ('temperature',))
  ens_t, ens_selection, _ = common.select(
      'student from the ensemble: T', {(t,): common.members(r) for t, r in ensemble.items()},
      ('temperature',))
  full = _full_train_count(teachers)
  small = max(int(round(preset['subset'] * full)),
              stages.setup.batch_size if not stages.setup.quick else common.QUICK_BATCH)
  subset_alone = stages.run('subset_alone', student(subset=(small, full)))
  subset_soft = stages.run('subset_ensemble', student(subset=(small, full),
                                                      teacher=teachers['workdir'],
                                                      temperature=ens_t[0]))
  runs = dict(teachers=common.members(teachers), alone=common.members(alone),
              one=common.group(common.members(one), ('temperature',))[one_t],
              ensemble=common.members(ensemble[ens_t[0]]),
              subset_alone=common.members(subset_alone),
              subset_soft=common.members(subset_soft))
  return _report(stages, preset, runs, ensemble[ens_t[0]], small,
                 [one_selection, ens_selection])


def _ensemble_section(results: dict) -> dict:
  """The ensemble's teacher section, from one of its students' results."""
  first = common.members(results)[0]['workdir']
  return report.read_json(os.path.join(first, 'results.json'))['teacher']


def _report(stages, preset: dict, runs: dict, ensemble_stage: dict, small: int,
            selections: list) -> str:
  """The two tables (the ensemble and §6's 3 %), report.md and report.json."""
  return ensembles_report.write(stages, preset, runs, _ensemble_section(ensemble_stage), small,
                                selections, HINTON)


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='cpu')
