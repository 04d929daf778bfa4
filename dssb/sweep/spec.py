"""A sweep's grid, declared in gin, and the runs it expands to (names, gin files, bindings).

A paper file declares its grid next to its base settings:

  from dssb import sweep
  sweep.grid:
    name = 'fig4_fractions'
    axes = {'DATASET': ['cqa', 'svamp'], 'RECIPE': ['standard', 'step_by_step'],
            'FRACTION': [0.125, 0.25, 0.5, 0.75, 1.0], 'SEED': [0, 1, 2, 3]}
    files = {'MODEL': {'220M': 'paper/hsieh_t5_base.gin', '770M': 'paper/hsieh_t5_large.gin'}}

`axes` bind gin macros (one binding MACRO=value per run); `files` are axes whose values name a
gin file (a model size changes dimensions, batch, steps and pretrained weights at once). A run is
one point of the product (file axes outermost, then the axes in their order).
"""

import dataclasses
import itertools
import math
import re
import shlex
from typing import Any, Mapping, Optional, Sequence

_SAFE_VALUE = re.compile(r'^[A-Za-z0-9_.+-]+$')


@dataclasses.dataclass(frozen=True)
class Grid:
  """The axes of a sweep: ((MACRO, values), ...) and ((AXIS, ((label, gin file), ...)), ...)."""
  name: str
  axes: tuple
  files: tuple = ()

  def size(self) -> int:
    return math.prod(len(values) for _, values in self.files + self.axes)


def grid(name: str, axes: Mapping[str, Sequence[Any]],
         files: Optional[Mapping[str, Mapping[str, str]]] = None) -> Grid:
  """The sweep's grid (gin binds this: `sweep.grid.name`, `.axes`, `.files`).

  Args:
    name: the sweep's name (default root folder runs/NAME, job names, summaries).
    axes: {MACRO: [values]}: each run binds MACRO to one value (strings, numbers, booleans).
    files: {AXIS: {label: gin file}}: each run includes one of the files (searched like
      --gin_file: ./ or gin/), right after the sweep's own gin file; its setting is the label.

  Returns:
    The Grid.
  """
  for key, values in list(axes.items()) + list((files or {}).items()):
    if not values:
      raise ValueError(f'sweep.grid: axis {key} of sweep {name!r} has no values')
    for value in values:
      if not _SAFE_VALUE.match(_text(value)):
        raise ValueError(f'sweep.grid: axis {key} value {value!r} of sweep {name!r} must be '
                         'letters, digits, _ . + - (it names run folders)')
  return Grid(name, tuple((k, tuple(v)) for k, v in axes.items()),
              tuple((k, tuple(v.items())) for k, v in (files or {}).items()))


@dataclasses.dataclass(frozen=True)
class Run:
  """One point of the grid: its settings, folder name, gin files and bindings."""
  sweep: str
  settings: tuple            # ((AXIS, value), ...) in grid order
  gin_files: tuple
  bindings: tuple            # the user's bindings, then one per macro axis (MODEL_DIR aside)

  @property
  def name(self) -> str:
    """Folder name, e.g. 'dataset=cqa,recipe=step_by_step,fraction=0.125,seed=0'."""
    return ','.join(f'{k.lower()}={_text(v)}' for k, v in self.settings)

  def model_dir(self, root: str) -> str:
    return f'{str(root).rstrip("/")}/{self.name}'

  def train_bindings(self, root: str) -> tuple:
    return self.bindings + (f'MODEL_DIR={self.model_dir(root)!r}',)

  def command(self, root: str, module: str = 'dssb.train') -> str:
    """The equivalent command line of this run."""
    return command_line(module, self.gin_files, self.train_bindings(root))


def expand(spec: Grid, gin_files: Sequence[str], bindings: Sequence[str] = ()) -> list:
  """The runs of `spec`: gin_files[0] (the sweep file), a file axis' file, the other files."""
  head, rest = tuple(gin_files[:1]), tuple(gin_files[1:])
  runs = []
  file_choices = [[(axis, label, path) for label, path in values] for axis, values in spec.files]
  axis_choices = [[(macro, value) for value in values] for macro, values in spec.axes]
  for chosen_files in itertools.product(*file_choices):
    for chosen in itertools.product(*axis_choices):
      settings = tuple((a, label) for a, label, _ in chosen_files) + tuple(chosen)
      files = head + tuple(path for _, _, path in chosen_files) + rest
      runs.append(Run(spec.name, settings, files,
                      tuple(bindings) + tuple(f'{m}={gin_literal(v)}' for m, v in chosen)))
  return runs


def select(runs: Sequence[Run], only: Sequence[str]) -> list:
  """The runs whose settings match every KEY=VALUE of `only` (KEY case-insensitive)."""
  wanted = []
  for item in only:
    key, sep, value = item.partition('=')
    if not sep:
      raise ValueError(f'--only {item!r}: write KEY=VALUE, e.g. --only DATASET=cqa')
    wanted.append((key.upper(), value))
  keys = {k for run in runs for k, _ in run.settings}
  unknown = sorted({k for k, _ in wanted} - keys)
  if unknown:
    raise ValueError(f'--only: {unknown} not an axis of the sweep (axes: {sorted(keys)})')
  return [run for run in runs
          if all(_text(dict(run.settings)[k]) == v for k, v in wanted)]


def gin_literal(value) -> str:
  """A Python value as gin reads it back (strings quoted)."""
  return repr(value)


def command_line(module: str, gin_files: Sequence[str], bindings: Sequence[str]) -> str:
  """`python -m MODULE --gin_file=... --gin.KEY=VALUE ...` (string values in double quotes)."""
  flags = []
  for b in bindings:
    key, _, value = b.partition('=')
    flags.append(f'--gin.{key}="{value}"' if "'" in value else shlex.quote(f'--gin.{b}'))
  return ' '.join(['python', '-m', module] + [f'--gin_file={f}' for f in gin_files] + flags)


def _text(value) -> str:
  return str(value)
