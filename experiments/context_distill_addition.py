"""Snell et al. 2022, Table 3 on the CPU: context distillation of an addition scratchpad, every
cell and the oracle control, over seeds; and distilling step-by-step's data fractions on the same
task (label-only vs label + scratchpad rationale). Then the report in results/.

  python experiments/context_distill_addition.py --work_dir /tmp/cd_addition
  python experiments/context_distill_addition.py --work_dir /tmp/cd_addition --report_only

The committed results ran as two processes side by side (2 cores, shared with other jobs):
  python experiments/context_distill_addition.py --work_dir /tmp/cd_addition \
      --soft_form_seeds 0 --teacher_500_seeds --multitask_seeds 0 --parts table3
  python experiments/context_distill_addition.py --work_dir /tmp/cd_addition --parts fractions \
      --fractions 0.125

The runs are declared in gin/paper/cd_table3_runs.gin; each cell is a gin/paper/cd_*.gin file
shrunk by gin/cpu/cd_addition_mini.gin (a small T5 from scratch, 1-3 digit operands). Killed,
it resumes: finished runs are skipped (their summaries are in OUT/runs/), an unfinished training
resumes from its checkpoints and the teacher's sampling from its file. --report_only rebuilds
results/context_distillation/ from the summaries alone.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cd_runs  # pylint: disable=g-import-not-at-top,wrong-import-position
from dssb.report import context_distill  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI = 'gin/cpu/cd_addition_mini.gin'
RUNS = 'gin/paper/cd_table3_runs.gin'  # the runs, declared in gin
FRACTIONS = (0.125, 0.25, 0.5, 1.0)
EXTRA_SOFT_FORMS = ('cd_soft_full', 'cd_soft_top_k', 'cd_soft_reverse')  # beside the paper's


def _paper(name):
  return f'gin/paper/{name}.gin'


def plan(work: str, seed: int, extra_gin: tuple, part: str,
         fractions: tuple = FRACTIONS[:-1]) -> list:
  """(Run, template of its evaluation) in order, as RUNS declares them. Part 'table3': the
  teacher, its distillation set, the students and controls; 'fractions': label-only and
  step-by-step at the fractions below 100% (the 100% runs belong to Table 3); 'teacher_500': a
  teacher on a quarter of the labelled scratchpads (500, the paper's count)."""
  return cd_runs.plan(RUNS, part, work, seed, (MINI,) + tuple(extra_gin),
                      [f for f in fractions if f < 1.0])


def _digits(problem_id: str) -> int:
  return len(str(max(int(x) for x in problem_id.split('+'))))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--work_dir', required=True, help='run folders (checkpoints, sets)')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--fraction_seeds', type=int, nargs='+', default=[0],
                      help='seeds of the fractions part (each costs about four teachers)')
  parser.add_argument('--soft_form_seeds', type=int, nargs='+', default=None,
                      help='seeds that also run the soft forms beside the paper\'s sampled one '
                      '(full, top-k, reverse); default: every seed')
  parser.add_argument('--teacher_500_seeds', type=int, nargs='*', default=None,
                      help='seeds of the teacher on 500 scratchpads; default: every seed')
  parser.add_argument('--out', default=os.path.join(REPO, 'results', 'context_distillation'))
  parser.add_argument('--gin_file', action='append', default=[],
                      help='extra gin file(s) included last (e.g. gin/cpu/cd_addition_tiny.gin '
                      'for a smoke run)')
  parser.add_argument('--fractions', type=float, nargs='+', default=FRACTIONS[:-1],
                      help='fractions below 100%% for the fractions part, run in this order')
  parser.add_argument('--multitask_seeds', type=int, nargs='*', default=None,
                      help='seeds of the 4000-step multi-task cell of Table 3; default: every '
                      'seed')
  parser.add_argument('--parts', nargs='+', default=['table3', 'fractions', 'teacher_500'],
                      help='which parts to run (two processes may run different parts)')
  parser.add_argument('--report_only', action='store_true')
  args = parser.parse_args(argv)
  os.chdir(REPO)
  if not args.report_only:
    cd_runs.use_compilation_cache(os.path.join(args.work_dir, 'xla_cache'))
    extra_gin = tuple(args.gin_file)
    parts = (('table3', args.seeds), ('fractions', args.fraction_seeds),
             ('teacher_500', args.seeds if args.teacher_500_seeds is None
              else args.teacher_500_seeds))
    soft_form_seeds = args.seeds if args.soft_form_seeds is None else args.soft_form_seeds
    for part, seeds in (p for p in parts if p[0] in args.parts):  # Table 3's seeds first
      for seed in seeds:
        data = cd_runs.data_settings((_paper('cd_table3_teacher'), MINI) + extra_gin,
                                     (f'SEED={seed}', "MODEL_DIR='x'"))
        extra = cd_runs.evaluation(data, os.path.join(args.work_dir, f'seed{seed}', 'teacher'),
                                   max_length=64, digits_of=_digits)
        for run, template in plan(args.work_dir, seed, extra_gin, part, args.fractions):
          if run.name in EXTRA_SOFT_FORMS and seed not in soft_form_seeds:
            continue
          if run.name == 'label_only_f1.0' and seed not in args.fraction_seeds:
            continue  # a point of the fraction curves, not a Table 3 cell
          if run.name == 'multitask_f1.0' and seed not in (
              args.seeds if args.multitask_seeds is None else args.multitask_seeds):
            continue
          cd_runs.execute(run, seed, args.out, lambda r=run, t=template: extra(r, t))
  context_distill.write_addition(args.out, args.out)


if __name__ == '__main__':
  main()
