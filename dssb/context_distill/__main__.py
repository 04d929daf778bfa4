"""Command line of the offline step: the teacher samples the distillation set (gin, as dssb.train).

  python -m dssb.context_distill --gin_file=gin/paper/cd_table3_distill_set.gin \
      --gin.TEACHER_CHECKPOINT="'/tmp/cd/teacher'" --gin.DISTILL_FILE="'/tmp/cd/set.jsonl'"

Rerunning the same command resumes an unfinished set. Exit codes: 0 done, 2 bad flags or gin
settings.
"""

import json
import sys

from dssb import gin_utils


def main(argv=None) -> int:
  parser = gin_utils.flag_parser('python -m dssb.context_distill', __doc__)
  args, bindings = gin_utils.parse_flags(parser, sys.argv[1:] if argv is None else argv,
                                         'gin/paper/cd_table3_distill_set.gin')
  from dssb.context_distill import sample  # pylint: disable=g-import-not-at-top
  try:
    gin_utils.parse_gin(args.gin_file, bindings)
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
