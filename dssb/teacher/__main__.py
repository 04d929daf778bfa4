"""python -m dssb.teacher: annotate a split with an open teacher, combine teachers, show prompts.

  python -m dssb.teacher annotate --teacher openai_compatible --dataset cqa --split train \\
      --out DIR [--limit N] [--gin.TeacherConfig.n=5]
  python -m dssb.teacher combine --dataset cqa --split train --teacher a=DIR_A \\
      --teacher b=DIR_B --teacher palm --name ab_palm --out DIR [--min_agreement 2]
  python -m dssb.teacher prompt --dataset svamp [--prompt v1] [--row 0] [--chat]

DIR then works as DSSB_DATA_DIR: train with --gin.TEACHER="'NAME'" and DSSB_DATA_DIR=DIR.
"""

import argparse
import json
import sys


def _annotate(args, bindings):
  from dssb.teacher import annotate, backends, config  # pylint: disable=g-import-not-at-top
  try:
    cfg = config.load(args.teacher, bindings)
  except config.ConfigError as e:
    raise SystemExit(f'teacher config: {e}') from e
  try:
    summary = annotate.annotate(cfg, args.dataset, args.split, args.out, data_dir=args.data_dir,
                                limit=args.limit, cache_path=args.cache,
                                progress=not args.no_progress)
  except backends.TeacherRequestError as e:
    raise SystemExit(f'annotate stopped: {e}\nEvery answer received so far is in the cache '
                     f'({args.cache or annotate.default_cache(args.out)}); rerun the same '
                     'command to continue.') from e
  except (ValueError, FileNotFoundError) as e:  # data, prompt, layout: the message names it
    raise SystemExit(f'annotate: {e}') from e
  print(annotate.describe(summary), file=sys.stderr)


def _combine(args, bindings):
  from dssb.teacher import combine  # pylint: disable=g-import-not-at-top
  del bindings
  teachers = [tuple(t.split('=', 1)) if '=' in t else (t, None) for t in args.teacher]
  summary = combine.combine(args.dataset, args.split, teachers, args.name, args.out,
                            min_agreement=args.min_agreement, data_dir=args.data_dir)
  print(json.dumps(summary, indent=1), file=sys.stderr)
  if summary['dropped_as_parse_failures']:
    print(f"{summary['dropped_as_parse_failures']} rows below agreement {args.min_agreement} "
          'have empty completions: train with --gin.PARSE_FAILURES="\'drop\'" to leave them '
          'out', file=sys.stderr)


def _prompt(args, bindings):
  from dssb.data import sources  # pylint: disable=g-import-not-at-top
  from dssb.teacher import prompts  # pylint: disable=g-import-not-at-top
  del bindings
  prompt = prompts.load(args.prompt, args.dataset)
  text = sources.read_examples(args.dataset, args.split, args.data_dir)[args.row]['input']
  print(f'# {prompt.identity} ({prompt.path}), {len(prompt.exemplars)} exemplars')
  if args.chat:
    print(json.dumps(prompts.render_chat(prompt, text), indent=1, ensure_ascii=False))
  else:
    print(prompts.render(prompt, text))


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m dssb.teacher', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  a = sub.add_parser('annotate', help='annotate a split with one teacher')
  a.add_argument('--teacher', required=True,
                 help='teacher gin file, or a name in gin/teachers/ (e.g. openai_compatible)')
  a.add_argument('--dataset', required=True, choices=('cqa', 'svamp', 'esnli', 'anli1'))
  a.add_argument('--split', required=True, help='source split: train, test (valid for NLI)')
  a.add_argument('--out', required=True, help='output data folder (works as DSSB_DATA_DIR)')
  a.add_argument('--data_dir', help='source data folder (default $DSSB_DATA_DIR)')
  a.add_argument('--limit', type=int, help='only the first N inputs')
  a.add_argument('--cache', help='SQLite cache (default OUT/annotation_cache.sqlite)')
  a.add_argument('--no_progress', action='store_true')
  c = sub.add_parser('combine', help='majority vote over several teachers')
  c.add_argument('--dataset', required=True, choices=('cqa', 'svamp', 'esnli', 'anli1'))
  c.add_argument('--split', required=True)
  c.add_argument('--teacher', action='append', required=True,
                 help='NAME or NAME=DATA_DIR (repeat, in priority order); palm = PaLM outputs')
  c.add_argument('--name', required=True, help='the combined teacher\'s name')
  c.add_argument('--out', required=True)
  c.add_argument('--min_agreement', type=int, default=1)
  c.add_argument('--data_dir', help='inputs (default $DSSB_DATA_DIR)')
  p = sub.add_parser('prompt', help='print the prompt of one input')
  p.add_argument('--dataset', required=True, choices=('cqa', 'svamp', 'esnli', 'anli1'))
  p.add_argument('--prompt', default='v1')
  p.add_argument('--split', default='test')
  p.add_argument('--row', type=int, default=0)
  p.add_argument('--chat', action='store_true')
  p.add_argument('--data_dir')
  args, rest = parser.parse_known_args(argv)
  bindings = []
  for arg in rest:
    if not arg.startswith('--gin.') or '=' not in arg or args.command != 'annotate':
      parser.error(f'unknown argument {arg!r} (annotate takes gin overrides as '
                   '--gin.TeacherConfig.FIELD=VALUE)')
    bindings.append(arg[len('--gin.'):])
  {'annotate': _annotate, 'combine': _combine, 'prompt': _prompt}[args.command](args, bindings)


if __name__ == '__main__':
  main()
