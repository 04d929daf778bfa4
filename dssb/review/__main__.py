"""python -m dssb.review: the label-quality loop, one subcommand a step.

  python -m dssb.review COMMAND --help

Each subcommand lives in the module that does its work (`add_arguments(parser)` and
`run(args) -> int`); this file only dispatches, importing the module asked for.
"""

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    'sources': ('dssb.review.sources', 'the vote table: teachers, samples, LFs, gold, humans'),
    'combine': ('dssb.review.combine', 'majority vote and Snorkel label model; source report'),
    'flag': ('dssb.review.flag', 'cleanlab over out-of-fold student probabilities -> queue'),
    'apply': ('dssb.review.apply', 'decisions + options -> curated labels (a teacher folder)'),
    'serve': ('dssb.review.page', 'the review page: one flagged example at a time, by rank'),
    'export': ('dssb.review.decisions', 'reviewers\' decisions -> a label source (JSONL/CSV)'),
    'import': ('dssb.review.importer', 'exported decisions back into a decisions file'),
}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m dssb.review', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  chosen = (argv if argv is not None else sys.argv[1:])[:1]
  for name, (module, help_text) in COMMANDS.items():
    sub = commands.add_parser(name, help=help_text, description=help_text)
    if chosen == [name]:  # import only the module asked for (some pull in JAX or FastAPI)
      importlib.import_module(module).add_arguments(sub)
  args = parser.parse_args(argv)
  return importlib.import_module(COMMANDS[args.command][0]).run(args) or 0


if __name__ == '__main__':
  sys.exit(main())
