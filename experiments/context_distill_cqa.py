"""Context distillation on real text: internalising an instruction and solved exemplars for
CommonsenseQA (the paper's Natural Instructions experiment, in spirit), CPU size, from scratch.

  python experiments/context_distill_cqa.py --work_dir /tmp/cd_cqa [--report_only]

The teacher learns to answer with the context (instruction + exemplars) on the labelled half of
the CQA train split; the student, from the teacher's weights, sees the bare question and learns
the teacher's sampled answers on the other half (hard targets, and the KL). Measured: accuracy,
agreement with the teacher, and the prompt tokens the student saves. Resumable like
context_distill_addition.py; the report goes to results/context_distillation/cqa.md.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cd_runs  # pylint: disable=g-import-not-at-top,wrong-import-position
from dssb.report import context_distill  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI = 'gin/cpu/cd_cqa_mini.gin'
RUNS = 'gin/cpu/cd_cqa_runs.gin'  # the runs, declared in gin


def plan(work: str, seed: int, extra_gin: tuple = ()) -> list:
  """(Run, template of its evaluation: 'teacher', 'student', None for the sampling), as RUNS
  declares them."""
  return cd_runs.plan(RUNS, 'cqa', work, seed, (MINI,) + tuple(extra_gin))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--work_dir', required=True)
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--out', default=os.path.join(REPO, 'results', 'context_distillation'))
  parser.add_argument('--gin_file', action='append', default=[],
                      help='extra gin file(s) included last (a smaller smoke run)')
  parser.add_argument('--report_only', action='store_true')
  args = parser.parse_args(argv)
  os.chdir(REPO)
  if not args.report_only:
    cd_runs.use_compilation_cache(os.path.join(args.work_dir, 'xla_cache'))
    for seed in args.seeds:
      data = cd_runs.data_settings(('gin/paper/cd_table3_teacher.gin', MINI)
                                   + tuple(args.gin_file), (f'SEED={seed}', "MODEL_DIR='x'"))
      extra = cd_runs.evaluation(data, os.path.join(args.work_dir, f'seed{seed}', 'teacher'),
                                 max_length=16)
      for run, template in plan(args.work_dir, seed, tuple(args.gin_file)):
        cd_runs.execute(run, seed, args.out, lambda r=run, t=template: extra(r, t))
  context_distill.write_cqa(args.out, args.out)


if __name__ == '__main__':
  main()
