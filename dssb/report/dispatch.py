"""`python -m dssb.report`: the one report path of every folder under results/.

  python -m dssb.report results/EXPERIMENT [--out DIR] [--collect ROOT] [--check]
  python -m dssb.report --all [--check]

A folder's kind is read from what it holds, and one module renders each kind:
  runs/*.json of sweeps named testbed*   the testbed's claims (dssb.testbed.report.render)
  runs/*.json of any other sweep         paper tables and fraction plots (dssb.report.paper)
  runs/seed*/*.json                      context distillation, Table 3 (.context_distill)
  summary.json (no runs/)                the open-teacher pipeline (.open_teacher)
  report.json (command, seeds, datasets) label quality (.label_quality)
--collect ROOT first gathers the summaries: a sweep's root (ROOT/*/sweep_run.json into
runs/), or the WORK folder of experiments/open_teacher_demo.sh (into summary.json).
--all rebuilds every such folder under results/ from its committed summaries and the data,
training nothing; the addition task's fraction runs of results/context_distillation are written
into results/mini_repro/runs/ first (the paper tables show them). --check writes nothing and
exits 1 if a committed file differs from a rebuild, byte for byte.
"""

import argparse
import glob
import importlib
import os
import sys
import tempfile
from typing import Dict, Iterable, List, Optional

from dssb.report import context_distill, label_quality, open_teacher, paper, summaries
from dssb.report.stats import same_bytes, write_text

RESULTS = os.path.join(paper.REPO, 'results')
TESTBED_RENDERER = 'dssb.testbed.report'  # render(summaries, out_dir) -> paths written
TESTBED_SWEEP_PREFIX = 'testbed'
# (folder whose runs give fraction runs, folder whose runs/ receives them), under results/.
FRACTION_RUNS = (('context_distillation', 'mini_repro'),)


def kind_of(folder: str) -> Optional[str]:
  """'testbed', 'paper', 'context_distillation', 'open_teacher', 'label_quality', or None
  (nothing to report)."""
  if glob.glob(os.path.join(folder, 'runs', 'seed*', '*.json')):
    return 'context_distillation'
  if glob.glob(os.path.join(folder, 'runs', '*.json')):
    sweeps = summaries.sweep_names(folder)
    if sweeps and all(s.startswith(TESTBED_SWEEP_PREFIX) for s in sweeps):
      return 'testbed'
    return 'paper'
  if open_teacher.has_summary(folder):
    return 'open_teacher'
  if label_quality.has_report(folder):
    return 'label_quality'
  return None


def _write_testbed(folder: str, out: str) -> List[str]:
  render = importlib.import_module(TESTBED_RENDERER).render
  written = render(summaries.load_runs(folder, required_settings=()), out)
  return sorted(os.path.relpath(os.path.join(out, p), out) for p in written)


def write(folder: str, out: Optional[str] = None, paper_numbers: str = paper.PAPER_NUMBERS,
          data_dir: Optional[str] = None) -> List[str]:
  """Builds FOLDER's report into OUT (default FOLDER); returns the files, relative to OUT."""
  out = out or folder
  kind = kind_of(folder)
  if kind is None:
    raise FileNotFoundError(f'{folder}: no run summaries (runs/*.json, runs/seed*/*.json), '
                            'no summary.json and no report.json: nothing to report')
  os.makedirs(out, exist_ok=True)
  if kind == 'testbed':
    return _write_testbed(folder, out)
  if kind == 'paper':
    return paper.write(folder, out, paper_numbers, data_dir)
  if kind == 'context_distillation':
    return context_distill.write(folder, out)
  if kind == 'label_quality':
    return label_quality.write(folder, out)
  return open_teacher.write(folder, out)


def differences(folder: str, out: Optional[str] = None,
                paper_numbers: str = paper.PAPER_NUMBERS,
                data_dir: Optional[str] = None) -> List[str]:
  """The report files in OUT (default FOLDER) that a fresh build would not reproduce byte for
  byte."""
  with tempfile.TemporaryDirectory() as fresh:
    files = write(folder, fresh, paper_numbers, data_dir)
    return [name for name in files
            if not same_bytes(os.path.join(fresh, name), os.path.join(out or folder, name))]


def collect(root: str, folder: str) -> List[str]:
  """Gathers the summaries of ROOT (a sweep's root or an open-teacher WORK folder) into
  FOLDER; returns what was collected."""
  if open_teacher.is_work_folder(root):
    return open_teacher.collect(root, folder)
  return summaries.collect(root, folder)


def fraction_runs(results: str = RESULTS) -> Dict[str, str]:
  """{path under RESULTS: text} of the fraction runs that FRACTION_RUNS derives."""
  files = {}
  for source, target in FRACTION_RUNS:
    for name, text in context_distill.fraction_runs(os.path.join(results, source)).items():
      files[os.path.join(target, name)] = text
  return files


def report_folders(results: str = RESULTS) -> List[str]:
  """The folders under RESULTS that hold something to report, sorted."""
  return [f for f in sorted(glob.glob(os.path.join(results, '*', '')))
          if kind_of(f) is not None]


def write_all(results: str = RESULTS, paper_numbers: str = paper.PAPER_NUMBERS,
              data_dir: Optional[str] = None) -> List[str]:
  """Rebuilds every report under RESULTS (fraction runs first); returns the paths written."""
  written = []
  for name, text in fraction_runs(results).items():
    write_text(os.path.join(results, name), text)
    written.append(os.path.join(results, name))
  for folder in report_folders(results):
    written += [os.path.join(folder, f) for f in write(folder, None, paper_numbers, data_dir)]
  return written


def check_all(results: str = RESULTS, paper_numbers: str = paper.PAPER_NUMBERS,
              data_dir: Optional[str] = None) -> List[str]:
  """The paths under RESULTS that `write_all` would change."""
  stale = []
  with tempfile.TemporaryDirectory() as fresh:
    for name, text in fraction_runs(results).items():
      write_text(os.path.join(fresh, name), text)
      if not same_bytes(os.path.join(fresh, name), os.path.join(results, name)):
        stale.append(os.path.join(results, name))
  for folder in report_folders(results):
    stale += [os.path.join(folder, f) for f in differences(folder, None, paper_numbers,
                                                           data_dir)]
  return stale


def main(argv: Optional[Iterable[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m dssb.report', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('experiment', nargs='?', help='a results folder (e.g. results/mini_repro)')
  parser.add_argument('--all', action='store_true',
                      help='every folder under --results (no training; committed summaries)')
  parser.add_argument('--results', default=RESULTS, help='with --all: the results folder')
  parser.add_argument('--out', help='where to write (default: the experiment folder)')
  parser.add_argument('--paper_numbers', default=paper.PAPER_NUMBERS)
  parser.add_argument('--data_dir', help='the DSS data (default: DSSB_DATA_DIR)')
  parser.add_argument('--collect', metavar='ROOT',
                      help='first gather the summaries of ROOT (a sweep root, or the WORK '
                      'folder of experiments/open_teacher_demo.sh)')
  parser.add_argument('--check', action='store_true',
                      help='write nothing; exit 1 if the committed files differ from a rebuild')
  args = parser.parse_args(None if argv is None else list(argv))
  if args.all == bool(args.experiment):
    parser.error('give one results folder, or --all')
  if args.all and (args.out or args.collect):
    parser.error('--out and --collect name one folder; not with --all')
  try:
    if args.collect:
      print(f'{len(collect(args.collect, args.experiment))} collected from {args.collect}')
    if args.check:
      stale = (check_all(args.results, args.paper_numbers, args.data_dir) if args.all else
               [os.path.join(args.out or args.experiment, name) for name in differences(
                   args.experiment, args.out, args.paper_numbers, args.data_dir)])
      for path in stale:
        print(f'{path}: differs from a rebuild (run python -m dssb.report '
              f'{"--all" if args.all else args.experiment})', file=sys.stderr)
      return 1 if stale else 0
    if args.all:
      written = write_all(args.results, args.paper_numbers, args.data_dir)
    else:
      out = args.out or args.experiment
      written = [os.path.join(out, name) for name in write(
          args.experiment, args.out, args.paper_numbers, args.data_dir)]
    print('\n'.join(written))
  except (FileNotFoundError, ValueError) as e:
    print(f'dssb.report: {e}', file=sys.stderr)
    return 2
  return 0
