"""The annotation output folder is a data folder: inputs linked (or the first rows with a limit),
the source's other entries beside them, the teacher's own folder real; never the source's."""

import json
import os

import pytest

from dssb.data import sources
from dssb.teacher import layout


def test_out_folder_reads_as_a_data_folder(dss_data_dir, tmp_path):
  out = str(tmp_path / 'out')
  folder = layout.prepare(out, 'svamp', 'train', 'mine', dss_data_dir, limit=5)
  assert len(sources.read_examples('svamp', 'train', out)) == 5
  assert len(sources.read_examples('svamp', 'test', out)) == 200  # linked
  assert sources.read_teacher_outputs('svamp', 'train', 'palm', out)  # PaLM's, linked
  assert not os.path.islink(folder) and folder.endswith('llm_mine')
  layout.write_outputs(folder, 'train', ['a'] * 5, [{'row': i} for i in range(5)], {'n': 5})
  assert sources.read_teacher_outputs('svamp', 'train', 'mine', out, expected=5) == ['a'] * 5
  # a later run without the limit gets all rows again (inputs and outputs stay aligned)
  layout.prepare(out, 'svamp', 'train', 'mine', dss_data_dir)
  assert len(sources.read_examples('svamp', 'train', out)) == 800
  with open(os.path.join(folder, 'train_summary.json')) as f:
    assert json.load(f) == {'n': 5}
  # numbered files of an earlier layout would be concatenated by the reader: they are removed
  open(os.path.join(folder, 'train_CoT_1.json'), 'w').write('["stale"]')
  layout.write_outputs(folder, 'train', ['b'] * 800, [], {})
  assert sources.read_teacher_outputs('svamp', 'train', 'mine', out, expected=800)[0] == 'b'


def test_refusals(dss_data_dir, tmp_path):
  with pytest.raises(ValueError, match="'palm' is the released PaLM outputs"):
    layout.prepare(str(tmp_path), 'svamp', 'train', 'palm', dss_data_dir)
  with pytest.raises(ValueError, match='--limit would overwrite'):
    layout.prepare(dss_data_dir, 'svamp', 'train', 'mine', dss_data_dir, limit=3)
  with pytest.raises(ValueError, match='Bad teacher name'):
    layout.prepare(str(tmp_path), 'svamp', 'train', '../x', dss_data_dir)
