"""Runs of the context-distillation experiments, in this process, resumable, one summary each.

A run is a gin-configured `dssb.train` training or `dssb.context_distill` sampling, exactly what
its command line (stored in the summary) does. A run whose summary exists is skipped; an
unfinished one resumes (the trainer from its checkpoints, the sampler from its file). Summaries
go to OUT/runs/seed{S}/{name}.json: the reports are rebuilt from them alone. The runs are
declared in gin (gin/paper/cd_table3_runs.gin, gin/cpu/cd_cqa_runs.gin; `plan` reads them).
"""

import dataclasses
import json
import os
import time
from typing import Callable, Optional, Sequence

import dssb

dssb.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
import gin

from dssb import gin_utils, sweep, train
from dssb.context_distill import distill_set, evaluate, sample, sources
from dssb.sweep.runner import log, use_compilation_cache  # pylint: disable=unused-import
# pylint: enable=g-import-not-at-top,wrong-import-position


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  kind: str                       # 'train' or 'sample'
  gin_files: tuple
  bindings: tuple = ()

  def command(self) -> str:
    """The equivalent command line (string values in double quotes, as the README writes)."""
    module = 'dssb.train' if self.kind == 'train' else 'dssb.context_distill'
    return sweep.command_line(module, self.gin_files, self.bindings)


def declared(parts: dict) -> dict:
  """{part: [(name, kind, cell, template, bindings), ...]}: the runs a gin file declares (gin
  binds `cd_runs.declared.parts`; gin/paper/cd_table3_runs.gin says what each field means)."""
  return parts


def declaration(runs_file: str) -> dict:
  """The parts RUNS_FILE declares (parsed alone: it names runs, it configures none)."""
  gin.clear_config()
  try:
    gin_utils.parse_gin([runs_file])
    parts = gin_utils.call_configured(declared, 'cd_runs.declared')
  finally:
    gin.clear_config()
  for part, entries in parts.items():
    for entry in entries:
      if len(entry) != 5 or entry[1] not in ('train', 'sample'):
        raise ValueError(f"{runs_file}: part {part!r}: {entry!r} is not (name, 'train' or "
                         "'sample', cell, template, bindings)")
  return parts


def _fill(text: str, values: dict) -> str:
  """TEXT with each {FIELD} of VALUES replaced (only those: a binding may hold other braces)."""
  for key, value in values.items():
    text = text.replace('{' + key + '}', value)
  return text


def plan(runs_file: str, part: str, work: str, seed: int, files_after: Sequence[str] = (),
         fractions: Sequence[float] = ()) -> list:
  """(Run, template of its evaluation) of PART of RUNS_FILE for SEED, its folders under
  WORK/seed{SEED}, in the declared order; each run's files are gin/paper/CELL.gin then
  FILES_AFTER (the size, a smoke run's file). A part whose names hold {fraction} is repeated
  for each of FRACTIONS, fraction by fraction."""
  parts = declaration(runs_file)
  if part not in parts:
    raise ValueError(f'{runs_file}: no part {part!r} (it declares {sorted(parts)})')
  runs_dir = os.path.join(work, f'seed{seed}')
  values = {'seed': str(seed), 'runs_dir': runs_dir,
            'teacher_dir': os.path.join(runs_dir, 'teacher'),
            'distill_file': os.path.join(runs_dir, 'distill_set.jsonl')}
  per_fraction = any('{fraction}' in entry[0] for entry in parts[part])
  out = []
  for fraction in (fractions if per_fraction else [None]):
    filled = dict(values, fraction=str(fraction)) if per_fraction else values
    for name, kind, cell, template, bindings in parts[part]:
      out.append((Run(_fill(name, filled), kind, (f'gin/paper/{cell}.gin', *files_after),
                      tuple(_fill(b, filled) for b in bindings)), template))
  return out


def _call(run: Run):
  """The run in this process (dssb.sweep's in-process call of a gin-configured entry)."""
  if run.kind == 'train':
    return sweep.call_in_process(train.train, 'train', run.gin_files, run.bindings)
  return sweep.call_in_process(sample.sample_distillation_set, 'sample', run.gin_files,
                               run.bindings)


def data_settings(gin_files: Sequence[str], bindings: Sequence[str]) -> sources.CDSettings:
  """The experiment's data settings, as the gin files and bindings give them."""
  gin.clear_config()
  try:
    gin_utils.parse_gin(gin_files, list(bindings) + ["RECIPE='teacher'", 'DISTILL_FILE=None'])
    return gin.get_configurable(sources.CDSettings)()
  finally:
    gin.clear_config()


def summary_path(out: str, seed: int, name: str) -> str:
  return os.path.join(out, 'runs', f'seed{seed}', f'{name}.json')


def execute(run: Run, seed: int, out: str, extra: Optional[Callable[[], dict]] = None) -> dict:
  """Runs `run` unless its summary exists; returns the summary (results + extra evaluations)."""
  path = summary_path(out, seed, run.name)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  log(f'seed {seed} {run.name}: {run.command()}')
  start = time.time()
  result = _call(run)
  summary = {'name': run.name, 'seed': seed, 'command': run.command(), 'results': result,
             'seconds': round(time.time() - start, 1)}
  if extra is not None:
    summary['extra'] = extra()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(summary, f, indent=1)
  os.replace(path + '.tmp', path)
  log(f'seed {seed} {run.name}: done in {summary["seconds"]:.0f} s')
  return summary


def answer_stats(answers: list, digits_of: Optional[Callable[[str], int]] = None) -> dict:
  """Accuracy, decoded tokens and (with digits_of) accuracy per operand digit count."""
  n = max(len(answers), 1)
  stats = {'accuracy': evaluate.accuracy(answers), 'num_examples': len(answers),
           'decoded_tokens': sum(a.tokens for a in answers) / n,
           'input_tokens': sum(a.input_tokens for a in answers) / n}
  if digits_of is not None:
    groups = {}
    for a in answers:
      groups.setdefault(digits_of(a.id), []).append(a)
    stats['accuracy_by_digits'] = {str(d): evaluate.accuracy(g) for d, g in sorted(groups.items())}
  return stats


def set_summary(path: str) -> dict:
  """The distillation set's counts (from its meta file)."""
  return (distill_set.read_meta(path) or {}).get('summary') or {}


def binding(run: Run, macro: str) -> Optional[str]:
  """The string value a run binds to a macro (MODEL_DIR, DISTILL_FILE), None if unbound."""
  for b in run.bindings:
    key, _, value = b.partition('=')
    if key == macro:
      return value.strip("'")
  return None


def _weights(run: Run) -> str:
  """The run's trained weights; an evaluation-only run (TRAIN_STEPS = 0: "student before")
  saved none, its weights are its initial ones, the teacher's."""
  model_dir = binding(run, 'MODEL_DIR')
  folder = os.path.join(model_dir, 'checkpoints')
  if os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder)):
    return model_dir
  return binding(run, 'TEACHER_DIR')


def evaluation(data: sources.CDSettings, teacher_dir: str, max_length: int,
               digits_of: Optional[Callable[[str], int]] = None) -> Callable:
  """extra(run, template) for `execute`: test answers of the run's checkpoint under its
  template, and (students) their agreement with the teacher's answers with its context,
  computed once, when first needed. A sampling run gives its set's counts instead."""
  cache = {}

  def teacher_answers():
    if 'teacher' not in cache:
      cache['teacher'] = evaluate.answers(teacher_dir, data, 'test', 'teacher', max_length)
    return cache['teacher']

  def extra(run: Run, template: Optional[str]) -> dict:
    if run.kind == 'sample':
      return {'set': set_summary(binding(run, 'DISTILL_FILE'))}
    found = evaluate.answers(_weights(run), data, 'test', template, max_length)
    stats = answer_stats(found, digits_of)
    if template == 'student':
      stats['agreement_with_teacher'] = evaluate.agreement(found, teacher_answers())
    return {'test': stats}

  return extra
