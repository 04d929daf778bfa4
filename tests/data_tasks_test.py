"""Tests of dssb.data.tasks: features per recipe, feature converters, names."""

import dataclasses
import hashlib
import inspect
import os

import gin
import numpy as np
import pytest
import seqio

from dssb import input_pipeline
from dssb.data import preprocess
from dssb.data import tasks
from dssb.data import vocab as vocab_lib

LENGTHS = {'inputs': 96, 'targets': 48, 'rationale_inputs': 96, 'rationale_targets': 48}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _first(name, split='train', lengths=None):
  ds = seqio.get_mixture_or_task(name).get_dataset(lengths or LENGTHS, split=split, shuffle=False)
  return next(ds.as_numpy_iterator())


def _text(ex, key):
  return ex[f'{key}_pretokenized'].decode()


def test_recipes_train_features(svamp_vocab):
  gold = '( ( 18.0 - 10.0 ) * 15.0 )'  # First row of the official train split.
  exs = {r: _first(tasks.get_task_name('svamp', r, vocab_path=svamp_vocab)) for r in tasks.RECIPES}
  x = _text(exs['standard'], 'inputs')
  assert x.startswith('The Ferris wheel') and _text(exs['standard'], 'targets') == gold
  assert _text(exs['distill'], 'targets') == '((18 - 10) * 15)'
  sbs = exs['step_by_step']
  assert {k for k in sbs if not k.endswith('_pretokenized')} == set(LENGTHS)
  assert _text(sbs, 'inputs') == 'predict: ' + x
  assert _text(sbs, 'targets') == gold
  assert _text(sbs, 'rationale_inputs') == 'explain: ' + x
  rationale = _text(sbs, 'rationale_targets')
  assert rationale.startswith('The Ferris wheel has 18 seats.')
  assert _text(exs['single_task_rationale_first'], 'targets') == f'{rationale} [label] {gold}'
  assert _text(exs['single_task_label_first'], 'targets') == f'{gold} [rationale] {rationale}'
  # cot_completion: the PaLM completion up to its answer sentence, read back by the parser.
  completion = _text(exs['cot_completion'], 'targets')
  assert completion == f'{rationale} The answer is ((18 - 10) * 15).'
  assert _text(exs['cot_completion'], 'inputs') == x
  assert preprocess.extract_label('cot_completion', completion, 'svamp') == '((18 - 10) * 15)'
  for ex in exs.values():
    for key in set(LENGTHS) & set(ex):
      assert ex[key].dtype == np.int32 and ex[key][-1] == 1  # eos appended.


def test_eval_splits_give_gold_labels(svamp_vocab):
  for recipe in tasks.RECIPES:
    name = tasks.get_task_name('svamp', recipe, label_source=(
        'teacher' if recipe == 'step_by_step' else None), vocab_path=svamp_vocab)
    task = seqio.get_mixture_or_task(name)
    assert task.metric_fns == [tasks.metrics.equation_accuracy]
    for split in ('validation', 'test'):
      ex = _first(name, split)
      assert set(ex) == {'inputs', 'targets', 'inputs_pretokenized', 'targets_pretokenized'}
      assert _text(ex, 'targets').startswith('( ')  # Gold equation format.
      prefix = 'predict: ' if recipe == 'step_by_step' else ''
      assert _text(ex, 'inputs').startswith(prefix + 'Paige' if split == 'test' else prefix)


def test_prefix_style_and_label_source(svamp_vocab):
  name = tasks.get_task_name('svamp', 'step_by_step', prefix_style='paper', label_source='teacher',
                             vocab_path=svamp_vocab)
  ex = _first(name)
  assert _text(ex, 'inputs').startswith('[label] The Ferris')
  assert _text(ex, 'rationale_inputs').startswith('[rationale] The Ferris')
  assert _text(ex, 'targets') == '((18 - 10) * 15)'  # The teacher's label.


def test_fraction_seed_drop(svamp_vocab):
  name = tasks.get_task_name('svamp', 'distill', fraction=0.25, seed=1, parse_failures='drop',
                             vocab_path=svamp_vocab)
  ds = seqio.get_mixture_or_task(name).get_dataset(None, split='train', shuffle=False)
  expected = [r['input'] for r in tasks.splits.load_split(
      'svamp', 'train', fraction=0.25, seed=1, parse_failures='drop')]
  assert [e['inputs_pretokenized'].decode() for e in ds.as_numpy_iterator()] == expected


@pytest.mark.parametrize('pack', [False, True])
def test_enc_dec_feature_converter(svamp_vocab, pack):
  name = tasks.get_task_name('svamp', 'standard', vocab_path=svamp_vocab)
  lengths = {'inputs': 512, 'targets': 128}
  ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split='train', shuffle=True, seed=0)
  conv = seqio.EncDecFeatureConverter(pack=pack)
  batch = next(conv(ds, lengths).batch(4).as_numpy_iterator())
  assert batch['encoder_input_tokens'].shape == (4, 512)
  assert batch['decoder_target_tokens'].shape == (4, 128)
  assert ('encoder_segment_ids' in batch) == pack
  if pack:
    assert batch['encoder_segment_ids'].max() > 1  # Several examples per row.


def test_step_by_step_pairs(svamp_vocab):
  """The trainer's batches (input_pipeline) pair the label and rationale halves of each row."""
  name = tasks.get_task_name('svamp', 'step_by_step', vocab_path=svamp_vocab)
  ds = seqio.get_mixture_or_task(name).get_dataset(LENGTHS, split='train', shuffle=False)
  examples = input_pipeline.load_examples(name, 'train', LENGTHS)
  batch = input_pipeline.encdec_batch(examples, [0, 1], LENGTHS)
  first = next(ds.as_numpy_iterator())
  n = len(first['inputs'])
  assert list(batch['label']['encoder_input_tokens'][0][:n]) == list(first['inputs'])
  m = len(first['rationale_inputs'])
  assert list(batch['rationale']['encoder_input_tokens'][0][:m]) == list(first['rationale_inputs'])
  assert batch['rationale']['decoder_target_tokens'].shape == (2, 48)


def test_nli_inputs_joined_by_eos(svamp_vocab):
  v = vocab_lib.get_vocabulary(svamp_vocab)
  name = tasks.get_task_name('anli1', 'standard', vocab_path=svamp_vocab)
  ex = _first(name, 'test', {'inputs': None, 'targets': None})
  premise, hypothesis = _text(ex, 'inputs').split('</s>')
  assert list(ex['inputs']) == v.encode(premise) + [1] + v.encode(hypothesis) + [1]
  assert _text(ex, 'targets') == 'entailment'
  assert seqio.get_mixture_or_task(name).metric_fns == [tasks.metrics.exact_match]


def test_names_are_deterministic_and_idempotent(svamp_vocab):
  a = tasks.get_task_name('cqa', 'step_by_step', fraction=0.5, seed=2, vocab_path=svamp_vocab)
  assert a == tasks.get_task_name('cqa', 'step_by_step', fraction=0.5, seed=2,
                                  vocab_path=svamp_vocab)
  assert a.startswith('dssb_cqa_step_by_step_gold_palm_f0.5_s2_code_keep_v')
  others = {tasks.get_task_name('cqa', 'step_by_step', vocab_path=svamp_vocab, **kw)
            for kw in ({'fraction': 0.25, 'seed': 2}, {'teacher': 'neox'},
                       {'prefix_style': 'paper'}, {'parse_failures': 'drop'},
                       {'label_source': 'teacher'})}
  assert len(others) == 5 and a not in others
  with pytest.raises(ValueError, match='already registered'):
    tasks.get_task_name('cqa', 'step_by_step', fraction=0.5, seed=2, vocab_path=svamp_vocab,
                        data_dir='/elsewhere')
  with pytest.raises(ValueError, match='standard'):
    tasks.get_task_name('cqa', 'standard', label_source='teacher', vocab_path=svamp_vocab)


def _sha(text, n):
  return hashlib.sha1(text.encode()).hexdigest()[:n]


@pytest.mark.parametrize('args,kwargs,expected', [
    (('cqa', 'step_by_step'), {'fraction': 0.5, 'seed': 2},
     'dssb_cqa_step_by_step_gold_palm_f0.5_s2_code_keep_v' + _sha('/v.model', 8)),
    # Recipes without a teacher ignore teacher, prefix style and parse failures.
    (('svamp', 'standard'), {'teacher': 'x', 'prefix_style': 'paper', 'parse_failures': 'drop'},
     'dssb_svamp_standard_gold_noteacher_f1_s0_noprefix_keep_v' + _sha('/v.model', 8)),
    (('anli1', 'distill'), {'fraction': 1 / 3, 'teacher': 'gpt-neox.2', 'seed': 11,
                            'parse_failures': 'drop', 'tfds_data_dir': 'gs://b/tfds'},
     'dssb_anli1_distill_teacher_gpt_neox.2_f0.3333333333_s11_noprefix_drop_v'
     + _sha('/v.model', 8) + '_tfds' + _sha('gs://b/tfds', 6)),
    (('esnli', 'step_by_step_rationale'), {'prefix_style': 'paper', 'fraction': 0.125},
     'dssb_esnli_step_by_step_rationale_gold_palm_f0.125_s0_paper_keep_v' + _sha('/v.model', 8)),
])
def test_task_name_rule(args, kwargs, expected):
  """Names are built by the documented rule: cached vocabularies and runs rely on it."""
  assert tasks.TaskSettings(*args, vocab_path='/v.model', **kwargs).name() == expected


def test_any_setting_but_data_dir_changes_the_name():
  base = tasks.TaskSettings('cqa', 'step_by_step', vocab_path='/v.model', label_source='teacher')
  assert base == tasks.TaskSettings('cqa', 'step_by_step', vocab_path='/v.model',
                                    label_source='teacher')
  assert base.name() == tasks.TaskSettings('cqa', 'step_by_step', vocab_path='/v.model',
                                           label_source='teacher').name()
  changes = {'dataset': 'svamp', 'recipe': 'single_task_label_first', 'fraction': 0.25,
             'seed': 3, 'teacher': 'other', 'label_source': 'gold', 'prefix_style': 'paper',
             'vocab_path': '/w.model', 'parse_failures': 'drop', 'tfds_data_dir': '/t',
             'soft_labels': True}
  assert set(changes) | {'data_dir', 'soft_label_floor'} == {
      f.name for f in dataclasses.fields(tasks.TaskSettings)}
  names = {field: dataclasses.replace(base, **{field: value}).name()
           for field, value in changes.items()}
  # the floor names a soft task; a hard task ignores it (normalised away)
  soft = dataclasses.replace(base, soft_labels=True)
  names['soft_label_floor'] = dataclasses.replace(soft, soft_label_floor=0.2).name()
  assert dataclasses.replace(base, soft_label_floor=0.2) == base
  assert len(set(names.values()) | {base.name()}) == len(changes) + 2, names
  elsewhere = dataclasses.replace(base, data_dir='/elsewhere')
  assert elsewhere.name() == base.name() and elsewhere != base
  with pytest.raises(dataclasses.FrozenInstanceError):
    base.seed = 1  # pytype: disable=not-writable


def test_settings_defaults_are_get_task_name_defaults():
  params = inspect.signature(tasks.get_task_name).parameters
  for f in dataclasses.fields(tasks.TaskSettings)[2:]:  # After dataset and recipe.
    assert params[f.name].default == f.default, f.name


@pytest.mark.parametrize('kwargs,message', [
    ({'dataset': 'gsm8k'}, "Unknown dataset 'gsm8k'"),
    ({'recipe': 'nope'}, "Unknown recipe 'nope'"),
    ({'label_source': 'both'}, 'label_source must be one of'),
    ({'recipe': 'standard', 'label_source': 'teacher'}, "recipe 'standard' trains on gold"),
    ({'recipe': 'distill', 'label_source': 'gold'}, "recipe 'distill' trains on teacher"),
    ({'prefix_style': 'mine'}, 'prefix_style must be one of'),
    ({'parse_failures': 'fix'}, 'parse_failures must be one of'),
    ({'soft_labels': True}, "soft_labels replace the teacher's label"),
    ({'recipe': 'distill', 'soft_labels': True, 'tfds_data_dir': '/t'},
     'soft_labels read the JSON teacher folder'),
    ({'recipe': 'distill', 'soft_labels': True, 'soft_label_floor': 1.0},
     'soft_label_floor must be in'),
    ({'teacher': 'two words'}, "Bad teacher name 'two words'"),
    ({'fraction': 0.0}, r'fraction must be in \(0, 1\], got 0.0'),
    ({'vocab_path': None}, 'No vocabulary: pass vocab_path or set DSSB_VOCAB'),
])
def test_settings_errors_name_the_field(monkeypatch, kwargs, message):
  monkeypatch.delenv('DSSB_VOCAB', raising=False)
  settings = {'dataset': 'cqa', 'recipe': 'step_by_step', 'vocab_path': '/v.model', **kwargs}
  with pytest.raises(ValueError, match=message):
    tasks.TaskSettings(**settings)


def test_postprocess():
  fn = preprocess.postprocess_fn('single_task_rationale_first')
  assert fn('He has 3. [label] ( 1.0 + 2.0 )') == '( 1.0 + 2.0 )'
  assert fn('cut off before the label') == ''
  fn = preprocess.postprocess_fn('single_task_label_first')
  assert fn('wooded area [rationale] Beavers need wood.') == 'wooded area'
  assert preprocess.postprocess_fn('standard')('zoo') == 'zoo'


def test_target_roundtrip(svamp_vocab):
  v = vocab_lib.get_vocabulary(svamp_vocab)
  fn = preprocess.postprocess_fn('standard', v)
  assert fn('( 84.0 / 2.0 )', is_target=True) == '( 84.0 / 2.0 )'
  assert fn('a\n  b', is_target=True) == v.decode(v.encode('a\n  b'))


def test_mixture(svamp_vocab):
  name = tasks.get_mixture_name('svamp', vocab_path=svamp_vocab)
  assert name == 'mix_' + tasks.TaskSettings('svamp', 'step_by_step', vocab_path=svamp_vocab).name()
  mix = seqio.get_mixture_or_task(name)
  assert len(mix.tasks) == 2
  ds = mix.get_dataset({'inputs': 96, 'targets': 48}, split='train', shuffle=True, seed=0)
  v = vocab_lib.get_vocabulary(svamp_vocab)
  prefixes = {v.decode(e['inputs'].tolist()).split(':')[0] for e in ds.take(20).as_numpy_iterator()}
  assert prefixes == {'predict', 'explain'}


def test_gin_binding(svamp_vocab):
  """The run defaults (gin/runs/train.gin) turn DATASET, RECIPE, FRACTION into the task."""
  from dssb import gin_utils  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin_utils.parse_gin(['models/tiny.gin', 'runs/train.gin'],
                      ["DATASET = 'svamp'", "RECIPE = 'step_by_step'", 'FRACTION = 0.5',
                       f"VOCAB_PATH = '{svamp_vocab}'", "MODEL_DIR = '/tmp/unused'"])
  try:
    name = gin.query_parameter('%TASK').scoped_configurable_fn()
    assert name == tasks.get_task_name(
        'svamp', 'step_by_step', fraction=0.5, vocab_path=svamp_vocab)
  finally:
    gin.clear_config()


def test_metric_fns_and_label_set():
  assert tasks.metric_fns('svamp') == [tasks.metrics.equation_accuracy]
  assert tasks.label_set('esnli') == ('entailment', 'neutral', 'contradiction')
  assert tasks.label_set('cqa') is None
