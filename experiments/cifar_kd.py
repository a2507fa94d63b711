r"""Teacher → students alone vs distilled over a T × alpha grid (seeds 001, 003, 004).

  python -m experiments.cifar_kd --preset=seed001 --workdir=runs/cifar_kd_seed001
  python -m experiments.cifar_kd --preset=seed003 --workdir=runs/cifar_kd_seed003
  python -m experiments.cifar_kd --preset=seed004 --workdir=runs/cifar_kd_seed004
  python -m experiments.cifar_kd --preset=cpu --dataset=fashion_mnist --workdir=runs/kd_fmnist

Stages: `teacher`; per student `<student>_alone` (one run per seed) and
`<student>_kd` (the whole T × alpha × seed grid as one vectorised program,
the teacher run inside the step because the inputs are augmented). Writes
report.md / report.json with the seed's numbers beside ours, and
curves.png (test accuracy per epoch).

Every run holds out the same seeded 10 % of the training split (seed003: its
20 %) as validation. The distilled row's T and alpha, and the best value of
seed 004's one-dimensional sweeps, are chosen there, by the mean validation
accuracy over seeds; the test set only gives the numbers reported.

Presets (CIFAR-10, the seeds' set-ups):
  seed001  ResNet-101 → ResNet-18, SGD 0.1, 101 epochs; T ∈ {1, 5, 10} ×
           alpha ∈ {0.1, 0.5, 0.9}. Seed: 92.59% alone, 93.38% best (T=5, alpha=0.1).
  seed003  ResNet-10 → ResNet-3/4/5/6 with an 80/20 validation split; T = 2,
           alpha = 0.25 (the PyTorch KD tutorial the seed follows).
  seed004  ResNet-18 → LightNN and SimpleNN, Adam 1e-3, 10 epochs, T = 2,
           distillation weight 0.25 / CE weight 0.75; on LightNN also
           T ∈ {1.5, 1.01} and weights 0.5 / 0.75.
  cpu      sized for 2 CPU cores (minutes) on Fashion-MNIST: LightNN →
           SimpleNN, 10,000 training examples, T ∈ {2, 4} × alpha ∈ {0.5, 0.9},
           3 seeds. (XLA's CPU convolutions reach only 5-20 GFLOP/s here, so
           the conv presets stay small.)
"""

import dataclasses

from experiments import common

PRESETS = {
    'seed001': dict(
        dataset='cifar10', epochs=101, teacher='resnet101', students=('resnet18',),
        temperatures=(1.0, 5.0, 10.0), alphas=(0.1, 0.5, 0.9),
        reference={'teacher': '92.12% (seed 001)', 'resnet18_alone': '92.59% (seed 001)',
                   'resnet18_kd': '93.38% at T=5, alpha=0.1 (seed 001)'}),
    'seed003': dict(
        dataset='cifar10', epochs=30, teacher='resnet10',
        students=('resnet3', 'resnet4', 'resnet5', 'resnet6'), validation_fraction=0.2,
        temperatures=(2.0,), alphas=(0.25,),
        reference={'teacher': '90% (seed 003)',
                   'resnet3_alone': '64%', 'resnet3_kd': '67% (+3)',
                   'resnet4_alone': '70%', 'resnet4_kd': '76% (+6)',
                   'resnet5_alone': '82%', 'resnet5_kd': '84% (+2)',
                   'resnet6_alone': '87%', 'resnet6_kd': '87% (+0)'}),
    'seed004': dict(
        dataset='cifar10', recipe='adam', epochs=10, teacher='resnet18',
        students=('lightnn', 'simplenn'), temperatures=(2.0,), alphas=(0.25,),
        extra=dict(student='lightnn', temperatures=(2.0, 1.5, 1.01), alphas=(0.25, 0.5, 0.75)),
        reference={'teacher': '80.30% (seed 004)', 'lightnn_alone': '70.94%',
                   'lightnn_kd': '71.01%', 'simplenn_alone': '62.46%',
                   'simplenn_kd': '62.50%'}),
    'cpu': dict(
        recipe='adam', dataset='fashion_mnist', epochs=5, train_examples=10000, seeds=3,
        teacher='lightnn', teacher_epochs=8, students=('simplenn',),
        temperatures=(2.0, 4.0), alphas=(0.5, 0.9), reference={}),
}


@dataclasses.dataclass
class _Report:
  """What the stages add to the report, in stage order."""
  rows: list  # the markdown table of teacher and students
  report_rows: list  # report.json rows (`common.row`)
  data: dict
  selections: list = dataclasses.field(default_factory=list)
  oracle_lines: list = dataclasses.field(default_factory=list)
  grid_sections: list = dataclasses.field(default_factory=list)
  curves: dict = dataclasses.field(default_factory=dict)


def body(stages: common.Stages, preset: dict) -> str:
  ref = preset['reference']
  teacher = stages.alone('teacher', preset['teacher'], seeds=1,
                         epochs=preset.get('teacher_epochs'))
  teacher_dir = stages.teacher_of('teacher')
  teacher_runs = common.members(teacher)
  out = _Report(
      rows=[[f'teacher {preset["teacher"]}', common.accuracy_text(teacher_runs),
             '', '', ref.get('teacher', ''), '`teacher`']],
      report_rows=[common.row(f'teacher {preset["teacher"]}', teacher_runs, stage='teacher')],
      data={'teacher': teacher_runs[0]['test_accuracy'], 'students': {}})
  for student in preset['students']:
    _student_stages(stages, preset, student, teacher_dir, out)
  extra = preset.get('extra')
  if extra:
    _one_dimensional_sweeps(stages, preset, extra, teacher_dir, out)
  common.plot_curves(f'{stages.workdir}/curves.png', out.curves,
                     f'{preset["name"]} on {stages.setup.dataset}')
  notes = 'Figure: `curves.png` (test accuracy per epoch, mean over seeds).\n'
  if out.oracle_lines:
    notes += '\n' + '\n'.join(f'- {line}' for line in out.oracle_lines) + '\n'
  return common.write_report(
      stages, title=f'Knowledge distillation, preset {preset["name"]}',
      command=common.command_line(),
      sections=[('Teacher and students',
                 ['model', 'test accuracy', 'setting (chosen on validation)', 'gain (points)',
                  'seed reports', 'sub-workdir'], out.rows)] + out.grid_sections,
      data=out.data, rows=out.report_rows, selections=out.selections, notes=notes)


def _student_stages(stages: common.Stages, preset: dict, student: str, teacher_dir: str,
                    out: _Report) -> None:
  """`student` alone and distilled over the T × alpha grid, with T and alpha chosen on
  validation."""
  ref = preset['reference']
  alone = common.members(stages.alone(f'{student}_alone', student))
  kd = common.members(stages.distill(
      f'{student}_kd', student, teacher_dir, temperatures=preset['temperatures'],
      alphas=preset['alphas']))
  groups = common.group(kd, ('temperature', 'alpha'))
  best, selection, oracle = common.select(
      f'{student}: T and alpha of the distilled row', groups, ('temperature', 'alpha'))
  out.selections.append(selection)
  setting = f'T={best[0]:g}, alpha={best[1]:g}'
  gain = 100 * (common.mean_accuracy(groups[best]) - common.mean_accuracy(alone))
  out.rows.append([f'{student} alone', common.accuracy_text(alone), '', '',
                   ref.get(f'{student}_alone', ''), f'`{student}_alone`'])
  out.rows.append([f'{student} distilled, {setting} (chosen on validation)',
                   common.accuracy_text(groups[best]), setting, f'{gain:+.2f}',
                   ref.get(f'{student}_kd', ''), f'`{student}_kd`'])
  out.report_rows.append(common.row(f'{student} alone', alone, stage=f'{student}_alone'))
  out.report_rows.append(common.row(
      f'{student} distilled from {preset["teacher"]}, {setting}', groups[best],
      stage=f'{student}_kd', selected_on='validation', gain_points=gain))
  if len(groups) > 1:
    out.oracle_lines.append(f'{student}: ' + common.oracle_text(
        groups, oracle, f'T={oracle[0]:g}, alpha={oracle[1]:g}'))
  out.curves[f'{student} alone'] = alone
  out.curves[f'{student} distilled ({setting})'] = groups[best]
  out.data['students'][student] = {
      'alone': common.mean_accuracy(alone), 'alone_runs': [r['test_accuracy'] for r in alone],
      'grid': {f'T={t:g},alpha={a:g}': [r['test_accuracy'] for r in g]
               for (t, a), g in sorted(groups.items())},
      'grid_validation': {f'T={t:g},alpha={a:g}': [r['validation_accuracy'] for r in g]
                          for (t, a), g in sorted(groups.items())},
      'chosen': selection, 'gain_points': gain}
  if len(groups) > 1:
    out.grid_sections.extend(_grid_tables(student, alone, groups))


def _grid_tables(student: str, alone: list[dict], groups: dict) -> list[tuple]:
  """The validation and test accuracy of a T × alpha grid, as two report sections."""
  ts = sorted({t for t, _ in groups})
  alphas = sorted({a for _, a in groups})
  return [(f'{student}: {split} accuracy, T × alpha (alone: '
           f'{common.accuracy_text(alone, field)})',
           ['alpha \\ T'] + [f'{t:g}' for t in ts],
           [[f'{a:g}'] + [common.accuracy_text(groups[(t, a)], field) for t in ts]
            for a in alphas])
          for split, field in (('validation', 'validation_accuracy'), ('test', 'test_accuracy'))]


def _one_dimensional_sweeps(stages: common.Stages, preset: dict, extra: dict,
                            teacher_dir: str, out: _Report) -> None:
  """seed 004's two one-dimensional sweeps on one student: T with alpha fixed, then alpha
  with T fixed."""
  student = extra['student']
  for axis, values, fixed in (('temperature', extra['temperatures'], 'alpha'),
                              ('alpha', extra['alphas'], 'temperature')):
    name = f'{student}_{axis}_sweep'
    kwargs = {'temperatures': values if axis == 'temperature' else preset['temperatures'],
              'alphas': values if axis == 'alpha' else preset['alphas']}
    swept = common.group(common.members(stages.distill(name, student, teacher_dir, **kwargs)),
                         (axis,))
    best, selection, oracle = common.select(f'{student}: {axis} ({fixed} fixed)', swept,
                                            (axis,))
    out.selections.append(selection)
    out.oracle_lines.append(f'{student} {axis} sweep: ' + common.oracle_text(
        swept, oracle, common.setting_text((axis,), oracle)))
    fixed_value = kwargs['alphas' if fixed == 'alpha' else 'temperatures'][0]
    for key, runs in sorted(swept.items()):
      settings = common.setting_text(('temperature', 'alpha'), (
          (key[0], fixed_value) if axis == 'temperature' else (fixed_value, key[0])))
      out.report_rows.append(common.row(
          f'{student} distilled from {preset["teacher"]}, {settings}', runs, stage=name))
    out.grid_sections.append((f'{student}: accuracy vs {axis} ({fixed}={fixed_value:g} fixed; '
                              f'chosen on validation: {axis}={best[0]:g})',
                              [axis, 'validation accuracy', 'test accuracy'],
                              [[f'{k[0]:g}', common.accuracy_text(v, 'validation_accuracy'),
                                common.accuracy_text(v)] for k, v in sorted(swept.items())]))
    out.data[name] = {f'{k[0]:g}': [r['test_accuracy'] for r in v] for k, v in swept.items()}


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='seed001')
