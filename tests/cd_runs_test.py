"""The context-distillation runs are declared in gin (gin/paper/cd_table3_runs.gin,
gin/cpu/cd_cqa_runs.gin) and experiments/cd_runs.py expands them: the declarations give exactly
the commands of the committed runs (results/context_distillation/runs/), and a declaration's
parts, placeholders and errors behave as the files say.
"""

import glob
import json
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'experiments'))

# pylint: disable=g-import-not-at-top,wrong-import-position
import cd_runs
import context_distill_addition
import context_distill_cqa
# pylint: enable=g-import-not-at-top,wrong-import-position

COMMITTED = os.path.join(REPO, 'results', 'context_distillation', 'runs')


def _committed():
  """{(seed, name): command} of the committed run summaries."""
  out = {}
  for path in glob.glob(os.path.join(COMMITTED, 'seed*', '*.json')):
    with open(path) as f:
      summary = json.load(f)
    out[(summary['seed'], summary['name'])] = summary['command']
  return out


def _declared(seed, work_addition, work_cqa, fractions):
  """{name: Run} of every declared run of SEED (both experiments, every part)."""
  runs = [r for part in ('table3', 'fractions', 'teacher_500')
          for r, _ in context_distill_addition.plan(work_addition, seed, (), part, fractions)]
  runs += [r for r, _ in context_distill_cqa.plan(work_cqa, seed)]
  return {r.name: r for r in runs}


def test_the_declarations_give_the_committed_runs_commands(monkeypatch):
  monkeypatch.chdir(REPO)
  committed = _committed()
  assert len(committed) >= 30  # 3 seeds of Table 3 on addition, and seed 0's other runs
  work = {}  # the work folder each experiment ran in, read from its commands
  for (_, name), command in committed.items():
    found = re.search(r"MODEL_DIR=\"'([^']*)/seed\d+/", command) or re.search(
        r"TEACHER_DIR=\"'([^']*)/seed\d+/", command)
    work.setdefault(name.startswith('cqa_'), set()).add(found.group(1))
  assert all(len(folders) == 1 for folders in work.values()), work
  (addition,), (cqa,) = work[False], work[True]
  for seed in sorted({s for s, _ in committed}):
    declared = _declared(seed, addition, cqa, context_distill_addition.FRACTIONS)
    for (s, name), command in committed.items():
      if s == seed:
        assert name in declared, f'seed {seed}: {name} ran but is not declared'
        assert declared[name].command() == command, name
  # Seed 0 ran every declared run of Table 3 and CQA, and the fractions at 12.5%.
  seed0 = {name for s, name in committed if s == 0}
  declared0 = _declared(0, addition, cqa, (0.125,))
  assert seed0 == set(declared0) - {'teacher_f0.25'}


def _declaration(tmp_path, parts):
  path = tmp_path / 'runs.gin'
  path.write_text('from __gin__ import dynamic_registration\nimport cd_runs\n'
                  f'cd_runs.declared.parts = {parts}\n')
  return str(path)


def test_a_fraction_part_repeats_fraction_by_fraction_and_fills_only_its_fields(tmp_path):
  runs_file = _declaration(tmp_path, {'p': [
      ('a_f{fraction}', 'train', 'cd_label_only', 'student',
       ['SEED={seed}', 'FRACTION={fraction}', 'TASK_FEATURE_LENGTHS={"inputs": 8}',
        "MODEL_DIR='{runs_dir}/a_f{fraction}'"]),
      ('b_f{fraction}', 'sample', 'cd_table3_distill_set', None,
       ["DISTILL_FILE='{distill_file}'", "TEACHER_DIR='{teacher_dir}'"])]})
  planned = cd_runs.plan(runs_file, 'p', '/w', 2, ('gin/cpu/x.gin',), (0.5, 0.125))
  assert [(r.name, t) for r, t in planned] == [('a_f0.5', 'student'), ('b_f0.5', None),
                                               ('a_f0.125', 'student'), ('b_f0.125', None)]
  first, second = planned[0][0], planned[1][0]
  assert first.gin_files == ('gin/paper/cd_label_only.gin', 'gin/cpu/x.gin')
  assert first.bindings == ('SEED=2', 'FRACTION=0.5', 'TASK_FEATURE_LENGTHS={"inputs": 8}',
                            "MODEL_DIR='/w/seed2/a_f0.5'")
  assert second.bindings == ("DISTILL_FILE='/w/seed2/distill_set.jsonl'",
                             "TEACHER_DIR='/w/seed2/teacher'")
  assert second.command().startswith('python -m dssb.context_distill ')


def test_a_malformed_declaration_and_an_unknown_part_are_named(tmp_path):
  runs_file = _declaration(tmp_path, {'p': [('a', 'evaluate', 'cd_label_only', None, [])]})
  with pytest.raises(ValueError, match=r"runs.gin: part 'p': .* is not \(name, 'train'"):
    cd_runs.plan(runs_file, 'p', '/w', 0)
  runs_file = _declaration(tmp_path, {'p': [('a', 'train', 'cd_label_only', None, [])]})
  with pytest.raises(ValueError, match=r"no part 'q' \(it declares \['p'\]\)"):
    cd_runs.plan(runs_file, 'q', '/w', 0)
