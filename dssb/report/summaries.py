"""Sweep run summaries: collected from a sweep's root into results/EXPERIMENT/runs/, and read
back (each one run as dssb/sweep/runner.py writes it: `sweep_run.json`)."""

import glob
import json
import os
from typing import List, Sequence


def load_runs(experiment: str, required_settings: Sequence[str] = ('DATASET', 'RECIPE')
              ) -> List[dict]:
  """Every run summary under EXPERIMENT/runs/, in file-name order, each with its file name
  added as 'file'; a malformed one is an error naming the file and the missing field."""
  files = sorted(glob.glob(os.path.join(experiment, 'runs', '*.json')))
  if not files:
    raise FileNotFoundError(f'{experiment}/runs/ holds no run summaries (*.json)')
  runs = []
  for path in files:
    with open(path) as f:
      try:
        run = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not JSON ({e})') from None
    for field in ('settings', 'command', 'results'):
      if field not in run:
        raise ValueError(f'{path}: no "{field}" field (a sweep_run.json has settings, '
                         'command and results)')
    for field in required_settings:
      if field not in run['settings']:
        raise ValueError(f'{path}: settings have no {field}')
    if 'last' not in run['results']:
      raise ValueError(f'{path}: results have no "last" (not a finished run\'s results.json)')
    runs.append(dict(run, file=os.path.basename(path)))
  return runs


def sweep_names(experiment: str) -> List[str]:
  """The sweep names of EXPERIMENT/runs/*.json (sorted, distinct); [] without summaries."""
  names = set()
  for path in glob.glob(os.path.join(experiment, 'runs', '*.json')):
    with open(path) as f:
      try:
        names.add(str(json.load(f).get('sweep', '')))
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not JSON ({e})') from None
  return sorted(names)


def collect(root: str, experiment: str) -> List[str]:
  """Copies every finished run's sweep_run.json under ROOT (a sweep's root) to
  EXPERIMENT/runs/<run name>.json, the summaries a report is built from and that results/
  commits; returns the run names."""
  names = []
  for path in sorted(glob.glob(os.path.join(root, '*', 'sweep_run.json'))):
    name = os.path.basename(os.path.dirname(path))
    os.makedirs(os.path.join(experiment, 'runs'), exist_ok=True)
    with open(path) as f:
      text = f.read()
    with open(os.path.join(experiment, 'runs', f'{name}.json'), 'w') as f:
      f.write(text)
    names.append(name)
  if not names:
    raise FileNotFoundError(f'{root}: no finished runs (*/sweep_run.json)')
  return names
