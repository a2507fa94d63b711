"""kdjax's import graph: no circles, config at the bottom, few function-local imports.

The graph is read from the source with `ast`, not by importing: an edge is any
`import kdjax...`, `from kdjax... import` or relative import in a module, at
module level or inside a function. `from kdjax.pkg import name` points at
`kdjax.pkg.name` when that is a module, else at `kdjax.pkg`. Importing
`kdjax.pkg.mod` runs `kdjax/pkg/__init__.py` first, so a module outside
`kdjax.pkg` that imports it also depends on `kdjax.pkg`; a module inside it
does not (the package is already being imported, or every package that
imports its submodules would be a circle).
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'kdjax'

# A function-local import of a kdjax module is for deferring a heavy library
# (TensorFlow, torch, matplotlib) or keeping a command's --help fast.
MAX_LOCAL_IMPORTS = 10


def _modules() -> dict[str, pathlib.Path]:
  """Dotted module name -> source file, for every module of kdjax."""
  out = {}
  for path in sorted(PACKAGE.rglob('*.py')):
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
      parts.pop()
    out['.'.join(parts)] = path
  return out


MODULES = _modules()


def _known(name: str) -> str:
  """`name`, or the closest enclosing kdjax module (an attribute of it was imported)."""
  while name not in MODULES:
    name = name.rpartition('.')[0]
  return name


class _Imports(ast.NodeVisitor):
  """The kdjax modules one module imports: (target, line, inside a function)."""

  def __init__(self, module: str, is_package: bool):
    self.module = module
    self.package = module if is_package else module.rpartition('.')[0]
    self.depth = 0
    self.found: list[tuple[str, int, bool]] = []

  def _in_function(self, node):
    self.depth += 1
    self.generic_visit(node)
    self.depth -= 1

  visit_FunctionDef = visit_AsyncFunctionDef = _in_function

  def visit_Import(self, node):
    for alias in node.names:
      if alias.name == 'kdjax' or alias.name.startswith('kdjax.'):
        self.found.append((_known(alias.name), node.lineno, self.depth > 0))

  def visit_ImportFrom(self, node):
    if node.level:
      base = self.package.split('.')[:len(self.package.split('.')) - node.level + 1]
      source = '.'.join(base + ([node.module] if node.module else []))
    else:
      source = node.module or ''
    if not (source == 'kdjax' or source.startswith('kdjax.')):
      return
    for alias in node.names:
      name = f'{source}.{alias.name}'
      self.found.append((name if name in MODULES else _known(source), node.lineno,
                         self.depth > 0))


def _imports() -> dict[str, list[tuple[str, int, bool]]]:
  out = {}
  for module, path in MODULES.items():
    visitor = _Imports(module, path.name == '__init__.py')
    visitor.visit(ast.parse(path.read_text(), str(path)))
    out[module] = visitor.found
  return out


IMPORTS = _imports()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One circle through each strongly connected group of modules (Tarjan's algorithm)."""
  index, low, stack, on_stack, groups = {}, {}, [], set(), []

  def visit(module):
    index[module] = low[module] = len(index)
    stack.append(module)
    on_stack.add(module)
    for target in sorted(graph[module]):
      if target not in index:
        visit(target)
        low[module] = min(low[module], low[target])
      elif target in on_stack:
        low[module] = min(low[module], index[target])
    if low[module] == index[module]:
      group = set()
      while True:
        member = stack.pop()
        on_stack.discard(member)
        group.add(member)
        if member == module:
          break
      if len(group) > 1 or module in graph[module]:
        groups.append(group)

  for module in sorted(graph):
    if module not in index:
      visit(module)
  return [_circle(graph, group) for group in groups]


def _circle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
  """A shortest path from the group's first module back to itself, inside the group."""
  start = min(group)
  paths = {start: [start]}
  frontier = [start]
  while frontier:
    following = []
    for module in frontier:
      for target in sorted(graph[module] & group):
        if target == start:
          return paths[module] + [start]
        if target not in paths:
          paths[target] = paths[module] + [target]
          following.append(target)
    frontier = following
  return [start]


def test_the_reader_sees_the_package():
  assert {'kdjax', 'kdjax.config', 'kdjax.models', 'kdjax.train.loop'} <= set(MODULES)
  assert ('kdjax.errors', False) in {(t, local) for t, _, local in IMPORTS['kdjax.config']}
  # `from kdjax.models import layers` names a module: the edge goes to it.
  assert 'kdjax.models.layers' in {t for t, _, _ in IMPORTS['kdjax.models.vgg']}
  assert _cycles({'a': {'b'}, 'b': {'c', 'a'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'a']]


def _packages_run(importer: str, target: str) -> set[str]:
  """The packages above `target` whose `__init__` importing it runs, seen from `importer`."""
  parts = target.split('.')
  above = {'.'.join(parts[:n]) for n in range(2, len(parts))}
  return {p for p in above if importer != p and not importer.startswith(p + '.')}


def test_no_module_imports_itself_back():
  graph = {module: set() for module in IMPORTS}
  for module, found in IMPORTS.items():
    for target, _, _ in found:
      graph[module] |= {target} | _packages_run(module, target)
  cycles = _cycles(graph)
  assert not cycles, 'import cycles: ' + '; '.join(' -> '.join(c) for c in cycles)


def test_few_function_local_imports():
  local = [f'{module}:{line} {target}' for module, found in IMPORTS.items()
           for target, line, inside in found if inside]
  lines = {entry.rsplit(' ', 1)[0] for entry in local}
  assert len(lines) <= MAX_LOCAL_IMPORTS, (
      f'{len(lines)} function-local kdjax imports (at most {MAX_LOCAL_IMPORTS}): '
      + ', '.join(sorted(local)))


def test_config_imports_nothing_of_kdjax_but_errors():
  targets = {target for target, _, _ in IMPORTS['kdjax.config']}
  assert targets <= {'kdjax.errors'}, f'kdjax.config imports {sorted(targets)}'
