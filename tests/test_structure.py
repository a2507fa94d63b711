"""Size limits that keep kdjax/ and experiments/ readable.

No function in kdjax/ or experiments/ runs over MAX_FUNCTION_LINES (from its
`def` to its last line, docstring included); a longer one is split into named
helpers. No module in experiments/ runs over MAX_LAUNCHER_LINES; a longer one
is split by concern.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80
MAX_LAUNCHER_LINES = 400
ALLOWED_LONG_FUNCTIONS = {
    'kdjax/config.py:default',  # the config schema: one field list
}


def _functions(tree: ast.AST, prefix: str = ''):
  """(qualified name, lines) of every function in `tree`, methods and nested ones included."""
  for node in ast.iter_child_nodes(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield prefix + node.name, node.end_lineno - node.lineno + 1
      yield from _functions(node, f'{prefix}{node.name}.')
    elif isinstance(node, ast.ClassDef):
      yield from _functions(node, f'{prefix}{node.name}.')
    else:
      yield from _functions(node, prefix)


def _modules(*folders: str) -> list[pathlib.Path]:
  return sorted(path for folder in folders for path in (ROOT / folder).rglob('*.py'))


def test_no_function_is_over_80_lines():
  long_ones = []
  for path in _modules('kdjax', 'experiments'):
    relative = path.relative_to(ROOT).as_posix()
    for name, lines in _functions(ast.parse(path.read_text(), str(path))):
      if lines > MAX_FUNCTION_LINES and f'{relative}:{name}' not in ALLOWED_LONG_FUNCTIONS:
        long_ones.append(f'{relative}:{name} ({lines} lines)')
  assert not long_ones, (f'functions over {MAX_FUNCTION_LINES} lines (split them into named '
                         f'helpers): {", ".join(long_ones)}')


def test_the_allowed_long_functions_still_exist():
  found = {f'{path.relative_to(ROOT).as_posix()}:{name}'
           for path in _modules('kdjax', 'experiments')
           for name, _ in _functions(ast.parse(path.read_text(), str(path)))}
  assert ALLOWED_LONG_FUNCTIONS <= found, ALLOWED_LONG_FUNCTIONS - found


def test_no_experiments_module_is_over_400_lines():
  long_ones = [f'{path.relative_to(ROOT).as_posix()} ({lines} lines)'
               for path in _modules('experiments')
               if (lines := len(path.read_text().splitlines())) > MAX_LAUNCHER_LINES]
  assert not long_ones, (f'modules in experiments/ over {MAX_LAUNCHER_LINES} lines (split them '
                         f'by concern): {", ".join(long_ones)}')
