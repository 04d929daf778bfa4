"""The open-teacher pipeline at CPU scale (results/open_teacher/): `collect` reads a run of
experiments/open_teacher_demo.sh (its WORK folder: annotations, the server's request log, the
teacher's and students' results.json) into summary.json and copies the annotator's two
summaries beside it; `write` renders README.md from summary.json alone. Every number is read
from the run's files, never typed.
"""

import json
import os
import shutil
from typing import List

from dssb.report.stats import write_text

TEACHER = 't5_teacher'
SUMMARY = 'summary.json'


def _json(path):
  with open(path) as f:
    return json.load(f)


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _pct(hits):
  return round(100.0 * sum(hits) / len(hits), 2) if hits else None


def is_work_folder(root: str) -> bool:
  """Whether ROOT looks like the WORK folder of experiments/open_teacher_demo.sh."""
  return (os.path.exists(os.path.join(root, 'requests.jsonl'))
          and os.path.exists(os.path.join(root, 'teacher', 'results.json')))


def collect(work: str, out: str) -> List[str]:
  """summary.json and annotation_{train,test}_summary.json in OUT, from the demo's WORK folder
  (needs the DSS data for PaLM's released outputs on the same rows); returns the files."""
  from dssb.data import splits  # pylint: disable=g-import-not-at-top
  from dssb.teacher import votes  # pylint: disable=g-import-not-at-top
  folder = os.path.join(work, 'data', 'datasets', 'svamp', f'llm_{TEACHER}')
  train, test = (_json(os.path.join(folder, f'{s}_summary.json')) for s in ('train', 'test'))
  records = _jsonl(os.path.join(folder, 'train_annotations.jsonl'))
  official = splits.split_rows('svamp', {'train': len(records), 'test': 0}, 1.0, 0)
  seen = set(official['train'][1].tolist())
  held_out = set(official['validation'][1].tolist())
  palm_rows = splits.source_rows('svamp', 'train')
  palm_hits = {r['row']: not r['teacher_failure'] and votes.is_correct('svamp', r['teacher_label'],
                                                                       r['label'])
               for r in palm_rows}
  palm_test = splits.source_rows('svamp', 'test')
  teacher_run = _json(os.path.join(work, 'teacher', 'results.json'))
  students = {t: _json(os.path.join(work, f'student_{t}', 'results.json'))
              for t in (TEACHER, 'palm')}
  requests = _jsonl(os.path.join(work, 'requests.jsonl'))
  summary = {
      'teacher': {
          'own_eval_test_accuracy_greedy': teacher_run['last']['test']['accuracy'],
          'annotation_accuracy_majority_of_3': {
              'train_rows_trained_on': _pct([r['correct'] for r in records if r['row'] in seen]),
              'train_rows_held_out': _pct([r['correct'] for r in records
                                           if r['row'] in held_out]),
              'test': test['accuracy']['majority']},
          'palm_accuracy_same_rows': {
              'train_rows_trained_on': _pct([palm_hits[i] for i in sorted(seen)]),
              'train_rows_held_out': _pct([palm_hits[i] for i in sorted(held_out)]),
              'test': _pct([not r['teacher_failure'] and votes.is_correct(
                  'svamp', r['teacher_label'], r['label']) for r in palm_test])},
          'per_sample_accuracy': {'train': train['accuracy']['per_sample'],
                                  'test': test['accuracy']['per_sample']},
          'parse': {'train': train['parse'], 'test': test['parse']},
          'agreement': {'train': train['agreement'], 'test': test['agreement']},
          'prompt': train['prompt'], 'sampling': train['sampling'], 'n': train['n'],
          'requests_answered_by_server': sum(r.get('status') == 200 for r in requests),
          'annotation_seconds': {'train': train['requests']['seconds'],
                                 'test': test['requests']['seconds']},
      },
      'students': {t: {'test_accuracy_last': s['last']['test']['accuracy'],
                       'test_accuracy_best_on_validation':
                           s.get('best_on_validation', {}).get('test', {}).get('accuracy'),
                       'steps': s['last']['step']} for t, s in students.items()},
  }
  os.makedirs(out, exist_ok=True)
  for split in ('train', 'test'):  # the annotation summaries as the annotator wrote them
    shutil.copyfile(os.path.join(folder, f'{split}_summary.json'),
                    os.path.join(out, f'annotation_{split}_summary.json'))
  write_text(os.path.join(out, SUMMARY), json.dumps(summary, indent=1))
  return sorted(['annotation_test_summary.json', 'annotation_train_summary.json', SUMMARY])


def has_summary(folder: str) -> bool:
  return os.path.exists(os.path.join(folder, SUMMARY))


def write(folder: str, out: str) -> List[str]:
  """README.md in OUT from FOLDER/summary.json; returns ['README.md']."""
  path = os.path.join(folder, SUMMARY)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no open-teacher summary (python -m dssb.report '
                            f'{folder} --collect WORK first)')
  summary = _json(path)
  for field in ('teacher', 'students'):
    if field not in summary:
      raise ValueError(f'{path}: no "{field}" field')
  t, st = summary['teacher'], summary['students']
  acc = t['annotation_accuracy_majority_of_3']
  parse_train, parse_test = t['parse']['train'], t['parse']['test']
  lines = [
      '# The open-teacher pipeline at CPU scale (SVAMP)',
      '',
      'Written by `python -m dssb.report results/open_teacher` from `summary.json`, which '
      '`--collect WORK` read from a run of `bash experiments/open_teacher_demo.sh` (the '
      'commands are in that script; every number below is read from the run\'s files, copied '
      'beside this file as `summary.json` and `annotation_{train,test}_summary.json`). One '
      'run, one seed: no standard errors.',
      '',
      '## What ran',
      '',
      '1. Teacher: a T5 v1.1 of about 2M parameters (d_model 128, 3 + 3 layers) trained from '
      'scratch for 1500 steps with the recipe `cot_completion` (`gin/cpu/svamp_cot_teacher.gin`):'
      ' input = a SVAMP problem, target = the released PaLM completion up to its answer '
      'sentence. No open LLM exists on this machine, so this T5 imitates PaLM on the 720 rows '
      'of the official train split: it stands in for an open teacher, it is not one.',
      '2. `python -m dssb.serve` served it; `python -m dssb.teacher annotate --teacher dssb_serve`'
      f' asked it through the `openai` client, prompt `{t["prompt"]}` (no exemplars), '
      f'{t["n"]} samples per input at temperature {t["sampling"]["temperature"]}, majority vote.',
      '3. The same tiny student (gin/cpu/svamp_step_by_step.gin: d_model 64, 2 + 2 layers, 200 '
      'steps) was trained by distilling step-by-step on teacher labels and rationales '
      '(`--gin.LABEL_SOURCE="\'teacher\'"`), once on this teacher\'s outputs '
      f'(`--gin.TEACHER="\'{TEACHER}\'"`, `DSSB_DATA_DIR` = the annotation folder) and once on '
      'PaLM\'s.',
      '',
      '## Teacher',
      '',
      '| SVAMP rows | T5 teacher: majority label vs gold (%) | PaLM\'s released outputs, same rows '
      '(%) |',
      '|---|---|---|',
      f'| train rows the teacher was trained on (720) | {acc["train_rows_trained_on"]} | '
      f'{t["palm_accuracy_same_rows"]["train_rows_trained_on"]} |',
      f'| train rows held out from it (the 80-row validation carve-out) | '
      f'{acc["train_rows_held_out"]} | {t["palm_accuracy_same_rows"]["train_rows_held_out"]} |',
      f'| test (200) | {acc["test"]} | {t["palm_accuracy_same_rows"]["test"]} |',
      '',
      f'Per sample: train {t["per_sample_accuracy"]["train"]}%, test '
      f'{t["per_sample_accuracy"]["test"]}%. The teacher\'s own greedy evaluation during '
      f'training (test): {t["own_eval_test_accuracy_greedy"]}%.',
      '',
      '| | samples | unparseable (empty label / not an equation) | chosen completions '
      'unparseable | vote agreement (mean) | unanimous |',
      '|---|---|---|---|---|---|',
  ]
  for name, parse in (('train', parse_train), ('test', parse_test)):
    agree = t['agreement'][name]
    lines.append(f'| {name} | {parse["samples"]["n"]} | '
                 f'{parse["samples"]["n"] - parse["samples"]["ok"]} '
                 f'({parse["samples"]["empty_label"]} / {parse["samples"]["label_not_in_set"]}) | '
                 f'{parse["chosen"]["n"] - parse["chosen"]["ok"]} of {parse["chosen"]["n"]} | '
                 f'{agree["mean"]} | {agree["unanimous"]}% |')
  lines += [
      '',
      f'The server answered {t["requests_answered_by_server"]} requests; annotation took '
      f'{t["annotation_seconds"]["train"]} s (train) and {t["annotation_seconds"]["test"]} s '
      '(test).',
      '',
      '## Students (SVAMP test accuracy, %)',
      '',
      '| teacher signal | last step | best on validation |',
      '|---|---|---|',
  ]
  for name, s in st.items():
    lines.append(f'| {name} | {s["test_accuracy_last"]} | '
                 f'{s["test_accuracy_best_on_validation"]} |')
  lines += [
      '',
      '## What it shows, plainly',
      '',
      '- The open pipeline runs end to end with the repository\'s own commands: a dssb '
      'checkpoint served through an OpenAI-compatible API, annotated with sampling and votes, '
      'parsed by the same parsers as the PaLM files, laid out so the unchanged trainer reads it '
      'with `--gin.TEACHER`.',
      f'- The teacher copies PaLM on rows it memorised ({acc["train_rows_trained_on"]}% against '
      f'PaLM\'s {t["palm_accuracy_same_rows"]["train_rows_trained_on"]}% on the same rows) and '
      f'fails on rows it never saw ({acc["train_rows_held_out"]}% held out, {acc["test"]}% test):'
      ' a 2M-parameter T5 trained on 720 problems does not reason. Its test accuracy measures '
      'this toy, not the method; its votes agree far less on unseen inputs, as they should.',
      '- Both students are tiny and trained for 200 steps from scratch; at this size the '
      'distilling step-by-step student scores near 0% whatever the teacher (see the quickstart),'
      ' so the student row checks the plumbing, not the quality of the teacher signal.',
      '- A real run points the same `annotate` command at an open LLM (README: vLLM, llama.cpp) '
      'with the few-shot prompts `v1`.',
  ]
  write_text(os.path.join(out, 'README.md'), '\n'.join(lines) + '\n')
  return ['README.md']
