"""Tests of dssb.data.tfds_builder: build SVAMP records, read them as a task."""

import seqio

from dssb.data import tasks
from dssb.data import tfds_builder


def test_build_and_read_as_task(dss_data_dir, svamp_vocab, tmp_path):
  builder = tfds_builder.get_builder('svamp', data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {'train': 800, 'test': 200}
  kw = dict(fraction=0.5, seed=3, parse_failures='drop', vocab_path=svamp_vocab)
  from_tfds = tasks.get_task_name('svamp', 'step_by_step', tfds_data_dir=str(tmp_path), **kw)
  from_json = tasks.get_task_name('svamp', 'step_by_step', **kw)
  assert from_tfds != from_json
  for split in ('train', 'validation', 'test'):
    got = [sorted((e['inputs_pretokenized'], e['targets_pretokenized'],
                   e.get('rationale_targets_pretokenized', b''))
                  for e in seqio.get_mixture_or_task(name).get_dataset(
                      None, split=split, shuffle=False).as_numpy_iterator())
           for name in (from_tfds, from_json)]
    assert got[0] == got[1] and got[0]


def test_build_from_zip_in_manual_dir(dss_data_dir, tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  manual = tmp_path / 'manual'
  manual.mkdir()
  base = os.path.join(dss_data_dir, 'datasets')
  with zipfile.ZipFile(manual / 'datasets.zip', 'w') as zf:
    for dirpath, _, names in os.walk(os.path.join(base, 'svamp')):
      for name in names:
        full = os.path.join(dirpath, name)
        zf.write(full, 'datasets/' + os.path.relpath(full, base))
  builder = tfds_builder.get_builder('svamp', data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  labels = {e['label'] for e in tfds.as_numpy(builder.as_dataset(split='test'))}
  assert len(labels) > 100 and b'( 10.0 * 45.0 )' in labels
