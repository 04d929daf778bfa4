"""TFDS builder `dss`: the DSS source files + parsed teacher outputs as records.

One config per dataset (teacher 'palm'); other teachers via
`get_builder(dataset, teacher, data_dir)`. Splits are the source files ('train', 'test', and
'valid' for e-SNLI/ANLI), each row with its `row` index, so that fractions and the validation
carve-out (splits.py) select rows by index at read time
(`tasks.get_task_name(..., tfds_data_dir=DIR)`).

Data come from, in order: the manual dir (a folder holding datasets/, or a datasets.zip),
$DSSB_DATA_DIR, else the official datasets.zip, downloaded and verified (sources.verify_zip). A
manual or data folder may be gs://, a datasets.zip must be local. Build with

    python -m dssb.data build_tfds --dataset cqa --out DIR [--data_dir FOLDER]

or `tfds build dss --imports dssb.data.tfds_builder --config cqa --data_dir DIR
[--manual_dir FOLDER]` (the tfds CLI imports apache_beam: install it first), or in Python
`get_builder('cqa', data_dir=DIR).download_and_prepare()`; then
`tfds.load('dss/cqa', data_dir=DIR)` after importing this module.
"""

import dataclasses
import os

from etils import epath
import numpy as np

import dssb

dssb.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow_datasets as tfds

from dssb import paths
from dssb.data import sources
from dssb.data import splits
# pylint: enable=g-import-not-at-top,wrong-import-position


@dataclasses.dataclass
class DssConfig(tfds.core.BuilderConfig):
  dataset: str = 'cqa'
  teacher: str = 'palm'


class Dss(tfds.core.GeneratorBasedBuilder):
  """Distilling step-by-step data (official release layout)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Official release files, PaLM teacher outputs.'}
  BUILDER_CONFIGS = [DssConfig(name=d, dataset=d) for d in sources.DATASETS]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Optional: a folder holding datasets/ (the unzipped official release) or datasets.zip. '
      f'Without it the builder reads $DSSB_DATA_DIR, else downloads {sources.OFFICIAL_ZIP_URL}.')
  # TFDS 4.9.10 derives this through `importlib_resources`, which it imports unconditionally but
  # only requires before Python 3.9: give it directly.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'id': text, 'row': np.int64, 'input': text, 'label': text, 'teacher_rationale': text,
            'teacher_label': text, 'teacher_failure': text, 'teacher_truncated': np.bool_,
        }),
        homepage='https://github.com/google-research/distilling-step-by-step')

  def _source_root(self, dl_manager) -> str:
    try:
      manual = os.fspath(dl_manager.manual_dir)
    except (AssertionError, ValueError):
      manual = None
    zip_path = None
    if manual and paths.path(manual, 'datasets').is_dir():
      return manual
    if manual and paths.path(manual, 'datasets.zip').exists():
      zip_path = os.path.join(manual, 'datasets.zip')  # Read by zipfile: local only.
    elif os.environ.get(sources.DATA_DIR_ENV):
      return sources.data_dir()
    else:
      zip_path = os.fspath(dl_manager.download(sources.OFFICIAL_ZIP_URL))
    sources.verify_zip(zip_path, (self.builder_config.dataset,))
    root = os.path.join(os.fspath(dl_manager.download_dir), 'dss_extracted')
    sources.extract_zip(zip_path, root)
    return root

  def _split_generators(self, dl_manager):
    root = self._source_root(dl_manager)
    dataset = self.builder_config.dataset
    return {s: self._generate_examples(root, s) for s in sources.SOURCE_SPLITS[dataset]}

  def _generate_examples(self, root, source_split):
    cfg = self.builder_config
    for r in splits.source_rows(cfg.dataset, source_split, cfg.teacher, root):
      yield r['row'], {k: r[k] for k in ('id', 'row', 'input', 'label', 'teacher_rationale',
                                         'teacher_label', 'teacher_failure', 'teacher_truncated')}


def get_builder(dataset: str, teacher: str = 'palm', data_dir: str | None = None) -> Dss:
  """The `dss` builder for a dataset and teacher, reading/writing data_dir."""
  sources.check_dataset(dataset)
  if teacher == 'palm':
    return Dss(config=dataset, data_dir=data_dir)
  sources.check_teacher(teacher)
  name = f'{dataset}_{teacher}'.replace('-', '_').replace('.', '_')
  return Dss(config=DssConfig(name=name, dataset=dataset, teacher=teacher), data_dir=data_dir)
