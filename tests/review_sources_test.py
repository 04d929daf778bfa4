"""The vote table: labeling functions that abstain, teachers and their samples as sources, human
decisions as a source, and a table that round-trips through its parquet files. Data: the shared
CQA and e-SNLI files; an annotation laid out by dssb.teacher.layout (its completions written
here from PaLM's, some answers changed)."""

import json

import pandas as pd
import pytest

from dssb.data import sources as data_sources
from dssb.review import lfs
from dssb.review import sources
from dssb.teacher import layout


def _nli(premise, hypothesis):
  return sources.example_view('esnli', {'input': premise + '</s>' + hypothesis})


def test_labeling_functions_vote_or_abstain():
  ex = _nli('A man is sleeping on a bench.', 'A man is not sleeping.')
  assert lfs.negation_contradiction(ex) == 'contradiction'
  assert lfs.negation_contradiction(_nli('A man sits.', 'A man sits on a bench.')) is None
  assert lfs.negation_contradiction(_nli('Nobody is not here.', 'He is not here.')) is None
  assert lfs.high_overlap_entailment(_nli('A dog runs in a green park.', 'A dog runs.')) \
      == 'entailment'
  assert lfs.high_overlap_entailment(_nli('A dog runs.', 'A cat sleeps on a sofa.')) is None
  cqa = {'input': 'Where do you keep a bank card?\nAnswer Choices:\n(a) wallet', 'choices':
         ['wallet', 'bank vault', 'card table', 'river', 'sky']}
  view = sources.example_view('cqa', cqa, rationale='A card goes in a wallet.')
  assert lfs.question_overlap(view) is None  # 'bank vault' and 'card table' tie: abstain
  assert lfs.rationale_names_one_choice(view) == 'wallet'
  assert lfs.rationale_names_one_choice({**view, 'rationale': None}) is None


def test_registry_lists_per_dataset_and_refuses_a_second_function_of_one_name():
  assert {'negation_contradiction', 'high_overlap_entailment'} <= set(lfs.registered('esnli'))
  assert 'question_overlap' in lfs.registered('cqa')
  assert 'question_overlap' not in lfs.registered('esnli')

  def question_overlap(ex):  # pylint: disable=unused-argument
    return None
  with pytest.raises(ValueError, match='already registered'):
    lfs.labeling_function('cqa')(question_overlap)


@pytest.fixture(scope='module')
def annotation(dss_data_dir, tmp_path_factory):
  """A 3-sample annotation of the first 30 CQA train rows: sample 0 is PaLM's completion, sample
  1 answers choice (a) on every row, sample 2 fails to parse on even rows."""
  out = str(tmp_path_factory.mktemp('annotated'))
  folder = layout.prepare(out, 'cqa', 'train', 'mine', dss_data_dir, limit=30)
  rows = data_sources.read_examples('cqa', 'train', out)
  palm = data_sources.read_teacher_outputs('cqa', 'train', 'palm', dss_data_dir)[:30]
  records = []
  for row, text in zip(rows, palm):
    from dssb.data import teacher_outputs  # pylint: disable=g-import-not-at-top
    p = teacher_outputs.parse('cqa', text, row['choices'])
    samples = [{'text': text, 'label': p.label, 'failure': p.failure},
               {'text': f"So the answer is (a) {row['choices'][0]}.",
                'label': row['choices'][0], 'failure': ''},
               {'text': 'no idea', 'label': ' ', 'failure': 'empty_label'} if row['row'] % 2 == 0
               else {'text': text, 'label': p.label, 'failure': p.failure}]
    records.append({'row': row['row'], 'id': row['id'], 'samples': samples, 'label': p.label})
  layout.write_outputs(folder, 'train', list(palm), records,
                       {'prompt': 'cqa_test_v1@abc', 'n': 3})
  return out


def test_teachers_samples_lfs_gold_and_humans_as_sources(annotation, dss_data_dir, tmp_path):
  rows = data_sources.read_examples('cqa', 'train', annotation)
  decisions = [
      {'id': 'cqa/train/0', 'action': 'relabel', 'label': rows[0]['choices'][2],
       'reviewer': 'ana', 'decided_at': '2026-12-04T17:00:00Z'},
      {'id': 'cqa/train/1', 'action': 'drop', 'label': None, 'reviewer': 'ana',
       'decided_at': '2026-12-04T17:00:01Z'},
      {'id': 'cqa/train/2', 'action': 'skip', 'label': None, 'reviewer': 'ana',
       'decided_at': '2026-12-04T17:00:02Z'},
      {'id': 'cqa/train/0', 'action': 'keep', 'label': rows[0]['choices'][1],  # changed mind
       'reviewer': 'ana', 'decided_at': '2026-12-04T17:00:03Z'}]
  table = sources.build('cqa', 'train', teachers=[('mine', annotation)])
  names = table.source_names()
  assert names[:4] == ['mine', 'mine_sample_0', 'mine_sample_1', 'mine_sample_2']
  assert table.source_names(['lf']) == list(lfs.registered('cqa'))
  assert names[-1] == 'gold' and len(table.examples) == 30
  kinds = dict(zip(table.sources['name'], table.sources['kind']))
  assert kinds['mine_sample_1'] == 'sample' and kinds['mine'] == 'teacher'
  prompts = dict(zip(table.sources['name'], table.sources['prompt']))
  assert prompts['mine_sample_0'] == 'cqa_test_v1@abc' and prompts['gold'] is None
  assert list(table.votes['mine_sample_1']) == [r['choices'][0] for r in rows]
  assert table.votes['mine_sample_2'][0] is None and table.votes['mine_sample_2'][1] is not None
  palm = sources.build('cqa', 'train', lfs=(), gold=False, data_dir=dss_data_dir)
  assert list(table.votes['mine']) == list(palm.votes['palm'][:30])
  assert palm.source_names() == ['palm'] and len(palm.examples) == 9741  # the source file
  assert list(table.votes['gold']) == [r['label'] for r in rows]
  labels, drops = sources.human_columns(decisions, list(table.examples['id']))
  assert labels[0] == rows[0]['choices'][1] and labels[1] is None and labels[2] is None
  assert drops[:3] == [False, True, False]
  table = sources.add_source(table, sources.Source('human', 'human', 'by hand'), labels)
  coverage = dict(zip(table.sources['name'], table.sources['coverage']))
  assert coverage['human'] == pytest.approx(1 / 30)
  assert coverage['mine_sample_2'] == pytest.approx(
      sum(v is not None for v in table.votes['mine_sample_2']) / 30)
  matrix = table.label_matrix(['mine_sample_1', 'human'])
  assert (matrix[:, 0] == 0).all() and matrix[0, 1] == 1 and (matrix[1:, 1] == -1).all()
  with pytest.raises(ValueError, match='not in the table'):
    sources.human_columns([{'id': 'cqa/train/999', 'action': 'keep', 'label': 'x'}],
                          list(table.examples['id']))


def test_the_vote_table_round_trips(annotation, tmp_path):
  table = sources.build('cqa', 'train', teachers=[('mine', annotation)])
  written = sources.write(table, str(tmp_path / 'votes'))
  assert pd.read_parquet(written['votes']).shape[0] == 30  # plain pandas reads it
  back = sources.read(str(tmp_path / 'votes'))
  pd.testing.assert_frame_equal(back.examples, table.examples)
  pd.testing.assert_frame_equal(back.votes, table.votes)
  pd.testing.assert_frame_equal(back.sources, table.sources, check_dtype=False)
  assert back.votes['mine_sample_2'][0] is None  # abstentions stay None, not NaN


def test_a_parsed_label_outside_the_candidates_is_an_abstention_counted(annotation, tmp_path):
  table = sources.build('cqa', 'train', teachers=[('mine', annotation)], lfs=())
  odd = ['not a choice'] + [None] * 29
  table = sources.add_source(table, sources.Source('odd', 'lf'), odd)
  row = table.sources.set_index('name').loc['odd']
  assert row['out_of_candidates'] == 1 and row['coverage'] == 0
  with pytest.raises(ValueError, match='kind'):
    sources.Source('x', 'oracle')
  with pytest.raises(ValueError, match='SVAMP'):
    sources.build('svamp', 'train')
  with pytest.raises(FileNotFoundError, match='votes.parquet'):
    sources.read(str(tmp_path / 'nothing'))
  assert json.dumps(list(table.examples['candidates'][0]))  # plain lists of strings
