"""Per-file test time from pytest's JUnit XML, against the tiers' budgets.

  python scripts/test_times.py fast=runs/tests/fast.xml slow=runs/tests/slow.xml \
      [--wall fast=212 --wall slow=480]

Prints, per tier, each test file's tests and summed seconds (slowest first),
the tier's total, its wall time where `--wall` gives it, and its budget; then
the slowest tests of all tiers, and each test over the per-test limit. A
report, not a check: the exit status is 0 whatever the times (machines are
noisy), 2 for a file that cannot be read.
"""

import argparse
import collections
import sys
import xml.etree.ElementTree as ET

# Wall-clock budgets per tier on a 2-core CPU (README, "Tests"), and the limit
# for one test.
BUDGETS = {'fast': 300.0, 'slow': 600.0, 'all': 900.0}
PER_TEST_LIMIT = 60.0


def read_cases(path: str) -> list[tuple[str, str, float]]:
  """(file, test name, seconds) of every test case in one JUnit XML file."""
  root = ET.parse(path).getroot()
  cases = []
  for case in root.iter('testcase'):
    module = case.get('classname', '').split('.')
    # classname is 'tests.test_x' or 'tests.test_x.TestClass'.
    file = next((part for part in module if part.startswith('test_')), '.'.join(module))
    cases.append((f'tests/{file}.py', case.get('name', ''), float(case.get('time', 0.0))))
  return cases


def _pairs(values: list[str], flag: str) -> dict[str, str]:
  pairs = {}
  for value in values:
    name, sep, rest = value.partition('=')
    if not sep or not name or not rest:
      raise SystemExit(f'test_times: {flag} takes TIER=VALUE, got {value!r}')
    pairs[name] = rest
  return pairs


def report(tiers: dict[str, list[tuple[str, str, float]]], walls: dict[str, float],
           slowest: int = 20) -> str:
  lines = []
  for tier, cases in tiers.items():
    per_file = collections.defaultdict(lambda: [0, 0.0])
    for file, _, seconds in cases:
      per_file[file][0] += 1
      per_file[file][1] += seconds
    total = sum(seconds for _, _, seconds in cases)
    wall = walls.get(tier)
    budget = BUDGETS.get(tier)
    head = f'tier {tier}: {len(cases)} tests, {total:.0f} s summed over workers'
    if wall is not None:
      head += f', {wall:.0f} s wall'
    if budget is not None:
      head += f' (budget {budget:.0f} s wall'
      head += ', over)' if wall is not None and wall > budget else ')'
    lines += [head, f'  {"file":<40} {"tests":>5} {"seconds":>8}']
    for file, (count, seconds) in sorted(per_file.items(), key=lambda kv: -kv[1][1]):
      lines.append(f'  {file:<40} {count:>5} {seconds:>8.1f}')
  if len(tiers) > 1 and walls and all(t in walls for t in tiers):
    total_wall = sum(walls[t] for t in tiers)
    lines.append(f'all tiers: {sum(len(c) for c in tiers.values())} tests, {total_wall:.0f} s '
                 f'wall (budget {BUDGETS["all"]:.0f} s{", over" if total_wall > BUDGETS["all"] else ""})')
  every = sorted(((seconds, tier, file, name) for tier, cases in tiers.items()
                  for file, name, seconds in cases), reverse=True)
  lines.append(f'slowest {min(slowest, len(every))} tests:')
  for seconds, tier, file, name in every[:slowest]:
    lines.append(f'  {seconds:7.1f} s  {tier:<5} {file}::{name}')
  over = [entry for entry in every if entry[0] > PER_TEST_LIMIT]
  lines.append(f'tests over {PER_TEST_LIMIT:.0f} s: {len(over)}'
               + ''.join(f'\n  {s:7.1f} s  {f}::{n}' for s, _, f, n in over))
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('xml', nargs='+', help='TIER=PATH of a JUnit XML file')
  parser.add_argument('--wall', action='append', default=[], help='TIER=SECONDS of wall time')
  parser.add_argument('--slowest', type=int, default=20)
  args = parser.parse_args(argv)
  tiers = {}
  for tier, path in _pairs(args.xml, 'xml').items():
    try:
      tiers[tier] = read_cases(path)
    except (OSError, ET.ParseError) as e:
      print(f'test_times: cannot read {path}: {e}', file=sys.stderr)
      return 2
  try:
    walls = {tier: float(value) for tier, value in _pairs(args.wall, '--wall').items()}
  except ValueError as e:
    print(f'test_times: --wall takes seconds: {e}', file=sys.stderr)
    return 2
  print(report(tiers, walls, args.slowest))
  return 0


if __name__ == '__main__':
  sys.exit(main())
