"""CLI of the data layer: describe, download, train_vocab.

  python -m dssb.data describe --dataset cqa [--teacher palm] \\
      [--fraction 0.5 --seed 1] [--ids]
      JSON: split sizes; per split the teacher's label accuracy against gold
      (percent, dataset metric) and its parse-failure counts; with --ids the
      ids (or '{file split}:{row}') of the train and validation rows, in order.
  python -m dssb.data download --out DIR [--url URL_OR_ZIP]
      fetch + verify the official datasets.zip, unzip to DIR/datasets/.
  python -m dssb.data train_vocab --dataset svamp --vocab_size 1000 --out PATH
  python -m dssb.data build_tfds --dataset cqa --out TFDS_DIR [--teacher palm]
      [--data_dir FOLDER_OR_ZIP_DIR]: the `dss` TFDS records (tfds_builder.py);
      the same as `tfds build dss --imports dssb.data.tfds_builder`, whose CLI
      needs apache_beam installed.
"""

import json
import sys
from typing import Any

from absl import app
from absl import flags

from dssb.data import metrics
from dssb.data import sources
from dssb.data import splits
from dssb.data import teacher_outputs
from dssb.data import vocab

_DATASET = flags.DEFINE_enum('dataset', None, sources.DATASETS, 'Dataset.')
_TEACHER = flags.DEFINE_string('teacher', 'palm',
                               "Teacher name; '' for none.")
_FRACTION = flags.DEFINE_float('fraction', 1.0, 'Train fraction (subsample).')
_SEED = flags.DEFINE_integer('seed', 0, 'Subsampling seed (official --run).')
_IDS = flags.DEFINE_bool('ids', False, 'describe: list the selected ids.')
_DATA_DIR = flags.DEFINE_string('data_dir', None,
                                f'Folder holding datasets/ (default ${sources.DATA_DIR_ENV}).')
_OUT = flags.DEFINE_string('out', None, 'download: folder; train_vocab: model path.')
_URL = flags.DEFINE_string('url', sources.OFFICIAL_ZIP_URL,
                           'download: URL or local path of datasets.zip.')
_VOCAB_SIZE = flags.DEFINE_integer('vocab_size', 1000, 'train_vocab: pieces.')


def _teacher_report(rows: list[dict[str, Any]]) -> dict[str, int]:
  return teacher_outputs.failure_report([
      teacher_outputs.Parsed(r['teacher_rationale'], r['teacher_label'],
                             r['teacher_failure'], r['teacher_truncated'],
                             r['teacher_no_answer_marker'])
      for r in rows])


def describe(dataset: str, *, teacher: str | None = 'palm',
             fraction: float = 1.0, seed: int = 0, ids: bool = False,
             data_dir: str | None = None) -> dict[str, Any]:
  """The `describe` report as a dict (see module docstring)."""
  root = sources.data_dir(data_dir)
  metric = metrics.metric_fns(dataset)[0]
  out = {'dataset': dataset, 'teacher': teacher, 'fraction': fraction,
         'seed': seed, 'data_dir': root, 'splits': {}}
  for split in splits.SPLITS:
    info: dict[str, Any] = {}
    try:
      rows = splits.load_split(dataset, split, fraction=fraction, seed=seed,
                               teacher=teacher, data_dir=root)
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
      info['teacher_accuracy'] = metric(
          [r['label'] for r in rows], [r['teacher_label'] for r in rows]
      )['accuracy']
      info['parse_failures'] = _teacher_report(rows)
    if ids and split != 'test':
      info['ids'] = [r['id'] for r in rows]
    out['splits'][split] = info
  return out


def main(argv):
  command = argv[1] if len(argv) == 2 else None
  if command == 'describe':
    if not _DATASET.value:
      raise app.UsageError('describe needs --dataset.')
    report = describe(_DATASET.value, teacher=_TEACHER.value or None,
                      fraction=_FRACTION.value, seed=_SEED.value,
                      ids=_IDS.value, data_dir=_DATA_DIR.value)
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write('\n')
  elif command == 'download':
    if not _OUT.value:
      raise app.UsageError('download needs --out DIR.')
    folder = sources.download(_OUT.value, _URL.value)
    print(f'Verified and unzipped into {folder}; set '
          f'{sources.DATA_DIR_ENV}={folder}')
  elif command == 'train_vocab':
    if not _DATASET.value or not _OUT.value:
      raise app.UsageError('train_vocab needs --dataset and --out.')
    path = vocab.train_vocab(_DATASET.value, _VOCAB_SIZE.value, _OUT.value,
                             teacher=_TEACHER.value or None,
                             data_dir=_DATA_DIR.value)
    print(f'{path}  (set {vocab.VOCAB_ENV}={path})')
  elif command == 'build_tfds':
    if not _DATASET.value or not _OUT.value:
      raise app.UsageError('build_tfds needs --dataset and --out.')
    from dssb.data import tfds_builder  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds_builder.get_builder(_DATASET.value, _TEACHER.value or 'palm',
                                       _OUT.value)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=_DATA_DIR.value))
    print(f'{builder.data_dir}  (tasks: get_task_name(..., tfds_data_dir='
          f'{_OUT.value!r}))')
  else:
    raise app.UsageError('usage: python -m dssb.data '
                         '{describe,download,train_vocab,build_tfds} [flags]')


if __name__ == '__main__':
  app.run(main)
