"""The package's shape: no import cycles, and no library module imports a command line.

An import cycle through a module run with `python -m` executes it twice (as __main__ and under
its name), so gin would bind one copy while the command line runs the other.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'dssb')


def _module_name(path):
  rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-len('.py')].split(os.sep)
  return '.'.join(rel[:-1] if rel[-1] == '__init__' else rel)


def _imports(path, module):
  """dssb modules that `path` imports anywhere (module level or inside functions)."""
  package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
  found = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] + [base])
      found.add(base.rstrip('.'))
      found.update(f'{base}.{a.name}' for a in node.names)
  return found


def _graph():
  paths = [os.path.join(root, f) for root, _, files in os.walk(PACKAGE) for f in files
           if f.endswith('.py')]
  modules = {_module_name(p): p for p in paths}
  return {m: sorted(i for i in _imports(p, m) if i in modules and i != m)
          for m, p in modules.items()}


def test_the_import_graph_is_read():
  graph = _graph()
  assert 'dssb.train.loop' in graph['dssb.train']
  assert 'dssb.model' in graph['dssb.sharding']


def test_no_library_module_imports_a_command_line():
  for module, imported in _graph().items():
    clis = [i for i in imported if i.endswith('__main__')]
    assert not clis, f'{module} imports the command line module(s) {clis}'


def test_no_import_cycles():
  graph = _graph()
  done, on_path = set(), []

  def visit(module):
    if module in on_path:
      pytest.fail('import cycle: ' + ' -> '.join(on_path[on_path.index(module):] + [module]))
    if module in done:
      return
    on_path.append(module)
    for dep in graph[module]:
      # `from dssb.train import x` imports the package dssb.train, which is not a cycle for
      # its own submodules loaded by that package's __init__.
      if not (dep == module.rpartition('.')[0] and module.startswith(dep + '.')):
        visit(dep)
    on_path.pop()
    done.add(module)

  for module in sorted(graph):
    visit(module)
