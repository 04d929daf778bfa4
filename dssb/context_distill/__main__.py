"""Command line of the offline step: the teacher samples the distillation set (gin, as dssb.train).

  python -m dssb.context_distill --gin_file=gin/paper/cd_table3_distill_set.gin \
      --gin.TEACHER_CHECKPOINT="'/tmp/cd/teacher'" --gin.DISTILL_FILE="'/tmp/cd/set.jsonl'"

Rerunning the same command resumes an unfinished set. Exit codes: 0 done, 2 bad flags or gin
settings.
"""

import argparse
import json
import sys


def parse_args(argv):
  """(gin files, gin bindings) from the command line."""
  parser = argparse.ArgumentParser(prog='python -m dssb.context_distill', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--gin_file', action='append', default=[], help='gin file (repeatable)')
  args, rest = parser.parse_known_args(argv)
  bindings = []
  for arg in rest:
    if not arg.startswith('--gin.') or '=' not in arg:
      parser.error(f'unknown argument {arg!r}; gin settings are written --gin.KEY=VALUE')
    bindings.append(arg[len('--gin.'):])
  if not args.gin_file:
    parser.error('give at least one --gin_file (e.g. gin/paper/cd_table3_distill_set.gin)')
  return args.gin_file, bindings


def main(argv=None) -> int:
  gin_files, bindings = parse_args(sys.argv[1:] if argv is None else argv)
  from dssb import gin_utils  # pylint: disable=g-import-not-at-top
  from dssb.context_distill import sample  # pylint: disable=g-import-not-at-top
  try:
    gin_utils.parse_gin(gin_files, bindings)
  except (ValueError, SyntaxError) as e:  # gin names the file, line and setting
    print(f'gin: {e}', file=sys.stderr)
    return 2
  try:
    gin_utils.check_required()
    summary = gin_utils.call_configured(sample.sample_distillation_set,
                                        'sample_distillation_set')
  except gin_utils.MissingSettings as e:
    print(e, file=sys.stderr)
    return 2
  print(json.dumps(summary))
  return 0


if __name__ == '__main__':
  sys.exit(main())
