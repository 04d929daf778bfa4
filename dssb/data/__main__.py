"""CLI of the data layer: describe, download, train_vocab, build_tfds.

  python -m dssb.data describe --dataset cqa [--teacher palm] [--fraction 0.5 --seed 1] [--ids]
      JSON: split sizes; per split the teacher's label accuracy against gold (percent, dataset
      metric) and its parse-failure counts; with --ids the ids (or '{file split}:{row}') of the
      train and validation rows, in order.
  python -m dssb.data download --out DIR [--url URL_OR_ZIP]
      fetch + verify the official datasets.zip, unzip to DIR/datasets/.
  python -m dssb.data train_vocab --dataset svamp --vocab_size 1000 --out PATH
  python -m dssb.data build_tfds --dataset cqa --out TFDS_DIR [--teacher palm]
      [--data_dir FOLDER_OR_ZIP_DIR]: the `dss` TFDS records (tfds_builder.py); the same as
      `tfds build dss --imports dssb.data.tfds_builder`, whose CLI needs apache_beam installed.

`describe` and `download` import no TensorFlow; `--teacher ''` means no teacher. Folders may be
gs:// paths wherever the data are read (--data_dir, train_vocab's --out), not for download.
"""

import argparse
import json
import sys
from typing import Any

from dssb.data import metrics
from dssb.data import sources
from dssb.data import splits
from dssb.data import teacher_outputs


def _teacher_report(rows: list[dict[str, Any]]) -> dict[str, int]:
  return teacher_outputs.failure_report([
      teacher_outputs.Parsed(r['teacher_rationale'], r['teacher_label'], r['teacher_failure'],
                             r['teacher_truncated'], r['teacher_no_answer_marker'])
      for r in rows])


def describe(dataset: str, *, teacher: str | None = 'palm', fraction: float = 1.0,
             seed: int = 0, ids: bool = False, data_dir: str | None = None) -> dict[str, Any]:
  """The `describe` report as a dict (see module docstring)."""
  root = sources.data_dir(data_dir)
  metric = metrics.metric_fns(dataset)[0]
  out = {'dataset': dataset, 'teacher': teacher, 'fraction': fraction, 'seed': seed,
         'data_dir': root, 'splits': {}}
  for split in splits.SPLITS:
    info: dict[str, Any] = {}
    try:
      rows = splits.load_split(dataset, split, fraction=fraction, seed=seed, teacher=teacher,
                               data_dir=root)
    except FileNotFoundError as e:
      info['size'] = None
      info['missing'] = str(e)
      if teacher and split == 'train':  # Teacher outputs may exist alone.
        try:
          texts = sources.read_teacher_outputs(dataset, 'train', teacher, root)
          info['teacher_outputs_of_train_file'] = teacher_outputs.failure_report(
              teacher_outputs.parse_all(dataset, texts))
        except FileNotFoundError as e2:
          info['teacher_missing'] = str(e2)
      out['splits'][split] = info
      continue
    info['size'] = len(rows)
    if teacher:
      info['teacher_accuracy'] = metric([r['label'] for r in rows],
                                        [r['teacher_label'] for r in rows])['accuracy']
      info['parse_failures'] = _teacher_report(rows)
    if ids and split != 'test':
      info['ids'] = [r['id'] for r in rows]
    out['splits'][split] = info
  return out


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m dssb.data', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

  def command(name, help_text, *, dataset=False, teacher=False, data_dir=False):
    sub = commands.add_parser(name, help=help_text, description=help_text)
    if dataset:
      sub.add_argument('--dataset', required=True, choices=sources.DATASETS)
    if teacher:
      sub.add_argument('--teacher', default='palm', help="teacher name; '' for none")
    if data_dir:
      sub.add_argument('--data_dir', default=None,
                       help=f'folder holding datasets/ (default ${sources.DATA_DIR_ENV})')
    return sub

  sub = command('describe', 'split sizes, teacher accuracy and parse failures (JSON)',
                dataset=True, teacher=True, data_dir=True)
  sub.add_argument('--fraction', type=float, default=1.0, help='train fraction (subsample)')
  sub.add_argument('--seed', type=int, default=0, help='subsampling seed (official --run)')
  sub.add_argument('--ids', action='store_true', help='list the selected train/validation ids')
  sub = command('download', 'fetch, verify and unzip the official datasets.zip')
  sub.add_argument('--out', required=True, help='local folder to unzip into')
  sub.add_argument('--url', default=sources.OFFICIAL_ZIP_URL,
                   help='URL or local path of datasets.zip')
  sub = command('train_vocab', "a SentencePiece model on the dataset's training text",
                dataset=True, teacher=True, data_dir=True)
  sub.add_argument('--vocab_size', type=int, default=1000, help='pieces')
  sub.add_argument('--out', required=True, help='model path')
  sub = command('build_tfds', 'the `dss` TFDS records of one dataset', dataset=True,
                teacher=True, data_dir=True)
  sub.add_argument('--out', required=True, help='TFDS data_dir to write')
  return parser


def main(argv: list[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  if args.command == 'describe':
    report = describe(args.dataset, teacher=args.teacher or None, fraction=args.fraction,
                      seed=args.seed, ids=args.ids, data_dir=args.data_dir)
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write('\n')
  elif args.command == 'download':
    folder = sources.download(args.out, args.url)
    print(f'Verified and unzipped into {folder}; set {sources.DATA_DIR_ENV}={folder}')
  elif args.command == 'train_vocab':
    from dssb.data import vocab  # pylint: disable=g-import-not-at-top  (TensorFlow)
    path = vocab.train_vocab(args.dataset, args.vocab_size, args.out,
                             teacher=args.teacher or None, data_dir=args.data_dir)
    print(f'{path}  (set {vocab.VOCAB_ENV}={path})')
  elif args.command == 'build_tfds':
    from dssb.data import tfds_builder  # pylint: disable=g-import-not-at-top  (TensorFlow)
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds_builder.get_builder(args.dataset, args.teacher or 'palm', args.out)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=args.data_dir))
    print(f'{builder.data_dir}  (tasks: get_task_name(..., tfds_data_dir={args.out!r}))')


if __name__ == '__main__':
  main()
