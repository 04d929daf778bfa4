"""Command line: describe a checkpoint, or convert one to a Hugging Face (or T5X) folder.

  python -m dssb.checkpoints describe PATH
  python -m dssb.checkpoints convert SRC DST [--to hf|t5x] [--step N]
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
  convert = sub.add_parser('convert', help='load SRC (T5X or HF) and write DST')
  convert.add_argument('src')
  convert.add_argument('dst')
  convert.add_argument('--to', choices=('hf', 't5x'), default='hf',
                       help='hf: config.json + model.safetensors; t5x: DST/checkpoint_<step>/')
  convert.add_argument('--step', type=int, default=0, help='step of a written T5X checkpoint')
  args = parser.parse_args(argv)

  from dssb import checkpoints  # pylint: disable=g-import-not-at-top
  try:
    if args.command == 'describe':
      fmt = checkpoints.detect_format(args.path)
      config, params = checkpoints.load(args.path)
      print(json.dumps({'path': args.path, 'format': fmt, 'config': dataclasses.asdict(config),
                        'num_params': checkpoints.param_count(params),
                        'num_arrays': len(checkpoints.base.flatten(params))}, indent=2))
    else:
      config, params = checkpoints.load(args.src)
      if args.to == 'hf':
        out = checkpoints.export_hf(config, params, args.dst)
      else:
        out = checkpoints.save_t5x(config, params, args.dst, step=args.step)
      print(json.dumps({'written': out, 'format': args.to, 'config': dataclasses.asdict(config),
                        'num_params': checkpoints.param_count(params)}, indent=2))
  except checkpoints.CheckpointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
