"""Command line: describe a checkpoint, or convert one to a Hugging Face (or T5X) folder.

  python -m dssb.checkpoints describe PATH
  python -m dssb.checkpoints convert SRC DST [--to hf|t5x] [--step N] [--which last|best]

SRC is a T5X checkpoint, a Hugging Face T5 folder, or a trainer run folder (the MODEL_DIR of
python -m dssb.train): a run is exported from its last checkpoint (--which last) or its best on
validation (--which best), with the architecture it trained with; its config.gin, a
dssb_run.json (run, step, vocabulary) and its vocabulary (spiece.model) go beside the weights:

  python -m dssb.checkpoints convert /tmp/run /tmp/run_hf --which best
"""

import argparse
import dataclasses
import json
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m dssb.checkpoints', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  describe = sub.add_parser('describe', help='print the inferred config as JSON and the size')
  describe.add_argument('path')
  convert = sub.add_parser('convert', help='load SRC (T5X, HF or a trainer run folder) and '
                           'write DST', description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
  convert.add_argument('src', help='a T5X checkpoint, a Hugging Face folder, or a trainer '
                       'MODEL_DIR')
  convert.add_argument('dst')
  convert.add_argument('--to', choices=('hf', 't5x'), default='hf',
                       help='hf: config.json + model.safetensors; t5x: DST/checkpoint_<step>/')
  convert.add_argument('--step', type=int, default=None,
                       help='step of a written T5X checkpoint (default: the run\'s step, or 0)')
  convert.add_argument('--which', choices=('last', 'best'), default=None,
                       help='a trainer run folder\'s last checkpoint (default) or its best on '
                       'validation')
  args = parser.parse_args(argv)

  from dssb import checkpoints  # pylint: disable=g-import-not-at-top
  from dssb.checkpoints import run_export  # pylint: disable=g-import-not-at-top
  try:
    if args.command == 'describe':
      print(json.dumps(_describe(args.path), indent=2))
    elif run_export.is_run(args.src):
      out = run_export.export_run(args.src, args.dst, args.which or 'last', args.to, args.step)
      print(json.dumps(out, indent=2))
    else:
      if args.which:
        raise checkpoints.CheckpointError(f'{args.src}: --which applies to a trainer run folder '
                                          '(MODEL_DIR); this is not one')
      config, params = checkpoints.load(args.src)
      if args.to == 'hf':
        out = checkpoints.export_hf(config, params, args.dst)
      else:
        out = checkpoints.save_t5x(config, params, args.dst, step=args.step or 0)
      print(json.dumps({'written': out, 'format': args.to, 'config': dataclasses.asdict(config),
                        'num_params': checkpoints.param_count(params)}, indent=2))
  except checkpoints.CheckpointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


def _describe(path: str) -> dict:
  from dssb import checkpoints  # pylint: disable=g-import-not-at-top
  from dssb.checkpoints import run_export  # pylint: disable=g-import-not-at-top
  if run_export.is_run(path):
    config, params, meta = run_export.load_run(path)
    fmt = f'dssb run (step {meta.get("step")})'
  else:
    fmt = checkpoints.detect_format(path)
    config, params = checkpoints.load(path)
  return {'path': path, 'format': fmt, 'config': dataclasses.asdict(config),
          'num_params': checkpoints.param_count(params),
          'num_arrays': len(checkpoints.base.flatten(params))}


if __name__ == '__main__':
  sys.exit(main())
