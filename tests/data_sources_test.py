"""Tests of dssb.data.sources: readers, errors naming file and line, download."""

import json
import os
import zipfile

import pytest

from dssb.data import sources


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)


def _cqa_line(i, **drop):
  row = {'id': f'q{i}', 'question': f'Question {i}?',
         'choices': ['a', 'b', 'c', 'd', 'e'], 'answer': 'c'}
  for k in drop:
    row.pop(k)
  return json.dumps(row)


def test_cqa_format(dss_data_dir):
  ex = sources.read_examples('cqa', 'test', dss_data_dir)[0]
  assert ex['input'] == (
      'A beaver is know for building prowess, their supplies come from where?'
      '\nAnswer Choices:\n(a) british columbia\n(b) body of water\n'
      '(c) wooded area\n(d) pay debts\n(e) zoo')
  assert ex['label'] == 'wooded area'  # The choice text, not the letter.
  assert ex['id'] == '080ef6941410139d6869e78122bc741e' and ex['row'] == 0


def test_svamp_format(dss_data_dir):
  ex = sources.read_examples('svamp', 'train', dss_data_dir)[0]
  assert ex['input'].endswith('each round\nHow many points did he score per round?')
  assert ex['label'] == '( 84.0 / 2.0 )'
  assert ex['id'] == 'train:0'


def test_nli_format(dss_data_dir):
  ex = sources.read_examples('esnli', 'test', dss_data_dir)[0]
  assert ex['input'] == ('This church choir sings to the masses as they sing '
                         'joyous songs from the book at a church.</s>'
                         'The church has cracks in the ceiling.')
  assert ex['label'] == 'neutral'
  anli = sources.read_examples('anli1', 'test', dss_data_dir)
  assert anli[0]['label'] == 'entailment'
  assert anli[0]['id'] == '4aae63a8-fcf7-406c-a2f3-50c31c5934a9'
  assert {e['label'] for e in anli} == set(sources.NLI_LABELS)


@pytest.mark.parametrize('dataset,sizes', [
    ('cqa', {'train': 9741, 'test': 1221}),
    ('svamp', {'train': 800, 'test': 200}),
    ('esnli', {'valid': 9842, 'test': 9824}),
    ('anli1', {'valid': 1000, 'test': 1000}),
])
def test_released_sizes(dss_data_dir, dataset, sizes):
  for split, n in sizes.items():
    assert len(sources.read_examples(dataset, split, dss_data_dir)) == n
    outs = sources.read_teacher_outputs(dataset, split, 'palm', dss_data_dir, expected=n)
    assert len(outs) == n


def test_missing_inputs_name_file_and_fix(tmp_path):
  _write(str(tmp_path / 'datasets/esnli/esnli_valid.json'), '')
  with pytest.raises(FileNotFoundError) as e:
    sources.read_examples('esnli', 'train', str(tmp_path))
  msg = str(e.value)
  assert 'datasets/esnli/esnli_train.json' in msg
  assert 'python -m dssb.data download' in msg and 'DSSB_DATA_DIR' in msg


def test_unset_data_dir(monkeypatch):
  monkeypatch.delenv('DSSB_DATA_DIR', raising=False)
  with pytest.raises(ValueError, match='DSSB_DATA_DIR'):
    sources.data_dir()


def test_bad_json_line(tmp_path):
  path = tmp_path / 'datasets/cqa/cqa_train.json'
  _write(str(path), '\n'.join([_cqa_line(0), _cqa_line(1), '{"id": "x",']))
  with pytest.raises(ValueError, match=r'cqa_train\.json line 3: invalid JSON'):
    sources.read_examples('cqa', 'train', str(tmp_path))


def test_missing_field(tmp_path):
  path = tmp_path / 'datasets/cqa/cqa_train.json'
  _write(str(path), '\n'.join([_cqa_line(0), _cqa_line(1, question=1)]))
  with pytest.raises(ValueError) as e:
    sources.read_examples('cqa', 'train', str(tmp_path))
  assert str(e.value) == f"{path} line 2: missing field 'question'"


def test_bad_nli_label(tmp_path):
  row = {'premise': 'p', 'hypothesis': 'h', 'label': 7}
  _write(str(tmp_path / 'datasets/anli1/anli1_test.json'), json.dumps(row))
  with pytest.raises(ValueError, match='anli1_test.json line 1: label 7'):
    sources.read_examples('anli1', 'test', str(tmp_path))


def _svamp_dir(tmp_path, n_rows, teacher_files, sub='llm'):
  rows = [json.dumps({'input': f'x{i}', 'label': f'( {i}.0 + 1.0 )'}) for i in range(n_rows)]
  _write(str(tmp_path / 'datasets/svamp/svamp_train.json'), '\n'.join(rows))
  for i, text in teacher_files.items():
    _write(str(tmp_path / f'datasets/svamp/{sub}/train_CoT_{i}.json'), text)
  return str(tmp_path)


def test_fewer_teacher_outputs_than_inputs(tmp_path):
  root = _svamp_dir(tmp_path, 3, {0: json.dumps(['a', 'b'])})
  with pytest.raises(ValueError) as e:
    sources.read_teacher_outputs('svamp', 'train', 'palm', root, expected=3)
  assert 'train_CoT_0.json' in str(e.value)
  assert '2 outputs' in str(e.value) and '3 inputs' in str(e.value)


def test_teacher_bad_json_names_file_and_line(tmp_path):
  root = _svamp_dir(tmp_path, 2, {0: '[\n"a",\n"b\n]'})
  with pytest.raises(ValueError, match=r'train_CoT_0\.json line 3'):
    sources.read_teacher_outputs('svamp', 'train', 'palm', root)


def test_teacher_not_strings(tmp_path):
  root = _svamp_dir(tmp_path, 2, {0: '["a", 3]'})
  with pytest.raises(ValueError, match=r'train_CoT_0\.json: element 1'):
    sources.read_teacher_outputs('svamp', 'train', 'palm', root)


def test_teacher_file_gap(tmp_path):
  root = _svamp_dir(tmp_path, 2, {0: '["a"]', 2: '["b"]'})
  with pytest.raises(FileNotFoundError, match=r'train_CoT_1\.json'):
    sources.read_teacher_outputs('svamp', 'train', 'palm', root)


def test_second_teacher_layout(tmp_path):
  root = _svamp_dir(tmp_path, 3, {0: '["a", "b"]', 1: '["c"]'}, sub='llm_mymodel')
  assert sources.read_teacher_outputs('svamp', 'train', 'mymodel', root, expected=3) == [
      'a', 'b', 'c']
  with pytest.raises(FileNotFoundError, match='llm/train_CoT_0.json'):
    sources.read_teacher_outputs('svamp', 'train', 'palm', root)


def _zip(path, files, prefix='', change=None):
  with zipfile.ZipFile(path, 'w') as zf:
    for rel, src in files.items():
      with open(src, 'rb') as f:
        data = f.read()
      if rel == change:
        data = data.replace(b'84.0', b'85.0', 1)
      zf.writestr(prefix + rel, data)


def _svamp_release_files(root):
  base = os.path.join(root, 'datasets', 'svamp')
  files = {}
  for dirpath, _, names in os.walk(base):
    for name in names:
      full = os.path.join(dirpath, name)
      files[os.path.relpath(full, base).replace(os.sep, '/')] = full
  return files


@pytest.mark.parametrize('prefix', ['datasets/svamp/', 'svamp/'])
def test_download_verifies_and_unzips(dss_data_dir, tmp_path, prefix):
  files = _svamp_release_files(dss_data_dir)
  _zip(tmp_path / 'datasets.zip', files, prefix)
  out = tmp_path / 'out'
  sources.download(str(out), str(tmp_path / 'datasets.zip'), ('svamp',))
  rows = sources.read_examples('svamp', 'test', str(out))
  assert len(rows) == 200


def test_download_rejects_tampered_zip(dss_data_dir, tmp_path):
  files = _svamp_release_files(dss_data_dir)
  _zip(tmp_path / 'datasets.zip', files, 'datasets/svamp/', change='svamp_train.json')
  with pytest.raises(ValueError, match='svamp_train.json does not match'):
    sources.download(str(tmp_path / 'out'), str(tmp_path / 'datasets.zip'), ('svamp',))
  (tmp_path / 'bad.zip').write_text('not a zip')
  with pytest.raises(ValueError, match='not a zip'):
    sources.verify_zip(str(tmp_path / 'bad.zip'))
  _zip(tmp_path / 'partial.zip', files, 'datasets/svamp/')
  with pytest.raises(ValueError, match='missing member datasets/cqa'):
    sources.verify_zip(str(tmp_path / 'partial.zip'))
