"""Prompt files: the shipped ones are valid (every exemplar parses to its gold label with the PaLM
parsers), identities follow content, rendering, and malformed files name what is wrong."""

import json
import re

import pytest

from dssb.data import sources
from dssb.data import teacher_outputs
from dssb.teacher import prompts

DATASETS = ('cqa', 'svamp', 'esnli', 'anli1')


@pytest.mark.parametrize('dataset', DATASETS)
def test_shipped_prompts_load_and_render(dataset):
  prompt = prompts.load('v1', dataset)
  assert len(prompt.exemplars) == 10 and prompt.identity.startswith(f'{dataset}_v1@')
  for ex in prompt.exemplars:  # load() checked it; recheck here so the test can fail alone
    parsed = teacher_outputs.parse(dataset, ex['output'], ex.get('choices'))
    assert not parsed.failure and ex['source']
  text = prompt.exemplars[0]['input']
  rendered = prompts.render(prompt, text)
  assert rendered.count(prompt.separator) == 10
  assert rendered.endswith(prompt.input_template.format(
      **prompts.template_fields(dataset, text)))
  chat = prompts.render_chat(prompt, text)
  assert [m['role'] for m in chat] == ['user', 'assistant'] * 10 + ['user']
  assert chat[1]['content'] == prompt.exemplars[0]['output']
  bare = prompts.load('bare_v1', dataset)
  assert bare.exemplars == () and prompts.render(bare, text) == text


def _line_labels(text):
  return re.findall(r'^([A-Z][A-Za-z ]*):', text, flags=re.M)


@pytest.mark.parametrize('dataset', DATASETS)
def test_prompt_format_is_that_of_the_palm_prompts(dss_data_dir, dataset):
  """The released PaLM completions run on into invented next examples, which show the format of
  the (unpublished) PaLM prompts: each complete invented example must have the line structure
  (Q: / Answer Choices: / A:, Premise: / Hypothesis: / Reasonings: / Answer: ...) of an
  exemplar of our prompt, and begin where our stop sequence says."""
  prompt = prompts.load('v1', dataset)
  stop = prompt.stop[0]
  ex = prompt.exemplars[0]
  ours = _line_labels(prompts.exemplar_text(prompt, ex))
  palm = sources.read_teacher_outputs(dataset, 'test', 'palm', dss_data_dir)[:1000]
  invented = [t.split(stop)[1] for t in palm if t.count(stop) >= 2]  # complete ones only
  assert len(invented) >= 4, dataset
  same = [_line_labels(stop.lstrip() + t) == ours for t in invented]
  assert sum(same) >= 0.95 * len(same), (dataset, ours, _line_labels(stop.lstrip() + invented[0]))


def test_identity_follows_content(tmp_path):
  data = json.load(open(prompts.resolve('v1', 'svamp')))
  path = tmp_path / 'svamp_x.json'
  path.write_text(json.dumps(data))
  same = prompts.load(str(path), 'svamp')
  assert same.identity == prompts.load('v1', 'svamp').identity
  data['exemplars'] = data['exemplars'][:3]
  path.write_text(json.dumps(data))
  assert prompts.load(str(path), 'svamp').identity != same.identity


def _write(tmp_path, data, name='p.json'):
  path = tmp_path / name
  path.write_text(data if isinstance(data, str) else json.dumps(data))
  return str(path)


def _svamp():
  return json.load(open(prompts.resolve('v1', 'svamp')))


@pytest.mark.parametrize('change,needle', [
    (lambda d: d.pop('input_template'), "missing field 'input_template'"),
    (lambda d: d.update(exemplar_count=3), "unknown field(s) ['exemplar_count']"),
    (lambda d: d.update(stop='\n\nQ:'), "field 'stop' is str, expected list"),
    (lambda d: d.update(dataset='cqa'), "field 'dataset' is 'cqa'"),
    (lambda d: d.update(input_template='Q: {question}\nA:'), "unknown: ['question']"),
    (lambda d: d.update(input_template='Q: {input\nA:'), "not a valid template"),
    (lambda d: d['exemplars'][2].update(output='So 17 - 15 = 2. The answer is 2 roses.'),
     "exemplar 2 (svamp_train.json row 22): its output parses to label ' ' (empty_label)"),
    (lambda d: d['exemplars'][1].update(output='Ron is 12. The answer is (12 + 5).'),
     "exemplar 1 (svamp_train.json row 21): its output parses to label '(12 + 5)', but its gold"),
    (lambda d: d['exemplars'][0].pop('label'), "exemplar 0 (svamp_train.json row 20): missing "
                                               "field 'label'"),
    (lambda d: d['exemplars'][0].update(output='17 - 15 = 2. The answer is (17 - 15).\n\nQ: more'),
     'contains the stop sequence'),
])
def test_malformed_prompts_name_the_field(tmp_path, change, needle):
  data = _svamp()
  change(data)
  with pytest.raises(prompts.PromptError) as e:
    prompts.load(_write(tmp_path, data), 'svamp')
  assert needle in str(e.value) and str(tmp_path) in str(e.value)


def test_malformed_files(tmp_path):
  with pytest.raises(prompts.PromptError, match=r'p.json line 3: invalid JSON'):
    prompts.load(_write(tmp_path, '{\n "name": "x",\n oops\n}'), 'svamp')
  with pytest.raises(prompts.PromptError, match='no such prompt file.*shipped ones for svamp'):
    prompts.load('v9', 'svamp')
  data = json.load(open(prompts.resolve('v1', 'cqa')))
  data['exemplars'][0]['answer'] = 'kansas'  # not among the choices: the parse check fails
  with pytest.raises(prompts.PromptError, match='exemplar 0 .* gold label is \'kansas\''):
    prompts.load(_write(tmp_path, data), 'cqa')
  data = json.load(open(prompts.resolve('v1', 'esnli')))
  data['exemplars'][3]['label'] = 'maybe'
  with pytest.raises(prompts.PromptError, match="exemplar 3 .* label 'maybe' is not one of"):
    prompts.load(_write(tmp_path, data), 'esnli')
