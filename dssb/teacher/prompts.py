"""Few-shot chain-of-thought prompts: versioned data files, checked on load, rendered per input.

A prompt file (dssb/teacher/prompts/{dataset}_{version}.json, or any path) holds:
  name, dataset, description;
  input_template   how an input is shown, e.g. "Q: {input}\\nA:"; fields: input (as
                   dssb.data.sources renders it), and premise / hypothesis for e-SNLI and ANLI;
  instruction      optional text before the exemplars (the system message of a chat prompt);
  separator        between exemplars (default a blank line);
  stop             stop sequences (the start of an invented next example);
  exemplars        rows in the dataset's source format (CQA question / choices / answer, SVAMP
                   input / label, NLI premise / hypothesis / label) plus `output`, the completion
                   in the format of the released PaLM outputs, and `source` (which row).
Each exemplar's output must parse, with the parsers that read the PaLM files, to its own gold
label; a file that breaks a rule raises PromptError naming the file and the field or exemplar.

Identity: `name@sha256[:12]` of the file's canonical JSON, recorded with every output; an edited
prompt is another prompt (and misses the annotation cache, as it should).
"""

import dataclasses
import hashlib
import json
import os
import string
from typing import Any, Sequence

from dssb.data import metrics
from dssb.data import sources
from dssb.data import teacher_outputs

PROMPT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'prompts')
_KEYS = {'name': str, 'dataset': str, 'description': str, 'instruction': str,
         'input_template': str, 'separator': str, 'stop': list, 'exemplars': list}
_OPTIONAL = {'description': '', 'instruction': '', 'separator': '\n\n', 'stop': []}


class PromptError(ValueError):
  """A prompt file that cannot be used; the message names the file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Prompt:
  name: str
  dataset: str
  path: str
  identity: str             # name@sha256 of the content
  input_template: str
  instruction: str
  separator: str
  stop: tuple
  exemplars: tuple          # ({'input', 'label', 'choices'?, 'output', 'source'}, ...)


def template_fields(dataset: str, text: str) -> dict[str, str]:
  """The fields an input_template may use for one input of `dataset`."""
  fields = {'input': text}
  if dataset in ('esnli', 'anli1'):
    premise, _, hypothesis = text.partition(sources.EOS_JOIN)
    fields.update(premise=premise, hypothesis=hypothesis)
  return fields


def resolve(spec: str, dataset: str) -> str:
  """A version name ('v1' -> prompts/{dataset}_v1.json) or a path (may hold '{dataset}')."""
  if spec.endswith('.json') or os.sep in spec:
    return spec.replace('{dataset}', dataset)
  return os.path.join(PROMPT_DIR, f'{dataset}_{spec}.json')


def load(spec: str, dataset: str) -> Prompt:
  """Reads and checks a prompt for `dataset` (see the module docstring)."""
  sources.check_dataset(dataset)
  path = resolve(spec, dataset)
  if not os.path.exists(path):
    known = sorted(f[:-5] for f in os.listdir(PROMPT_DIR) if f.startswith(dataset + '_'))
    raise PromptError(f'{path}: no such prompt file (prompt {spec!r}; the shipped ones for '
                      f'{dataset}: {known})')
  with open(path, encoding='utf-8') as f:
    text = f.read()
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise PromptError(f'{path} line {e.lineno}: invalid JSON ({e.msg})') from e
  return parse(data, path, dataset)


def parse(data: Any, path: str, dataset: str) -> Prompt:
  """Checks the content of a prompt file (`path` names it in errors)."""
  if not isinstance(data, dict):
    raise PromptError(f'{path}: expected a JSON object, got {type(data).__name__}')
  unknown = sorted(set(data) - set(_KEYS))
  if unknown:
    raise PromptError(f'{path}: unknown field(s) {unknown}; allowed: {sorted(_KEYS)}')
  data = {**_OPTIONAL, **data}
  for key, kind in _KEYS.items():
    if key not in data:
      raise PromptError(f'{path}: missing field {key!r}')
    if not isinstance(data[key], kind):
      raise PromptError(f'{path}: field {key!r} is {type(data[key]).__name__}, expected '
                        f'{kind.__name__}')
  if data['dataset'] != dataset:
    raise PromptError(f'{path}: field \'dataset\' is {data["dataset"]!r}, but the prompt is '
                      f'used for {dataset!r}')
  if not all(isinstance(s, str) and s for s in data['stop']):
    raise PromptError(f'{path}: field \'stop\' must be a list of non-empty strings')
  _check_template(data['input_template'], dataset, path)
  exemplars = tuple(_exemplar(ex, i, dataset, data['stop'], path)
                    for i, ex in enumerate(data['exemplars']))
  canonical = json.dumps(data, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
  digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
  return Prompt(name=data['name'], dataset=dataset, path=path, identity=f'{data["name"]}@{digest}',
                input_template=data['input_template'], instruction=data['instruction'],
                separator=data['separator'], stop=tuple(data['stop']), exemplars=exemplars)


def _check_template(template: str, dataset: str, path: str) -> None:
  allowed = set(template_fields(dataset, ''))
  try:
    used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
  except ValueError as e:
    raise PromptError(f'{path}: field \'input_template\' is not a valid template ({e})') from e
  bad = sorted(used - allowed)
  if bad or not used:
    raise PromptError(f'{path}: field \'input_template\' uses {sorted(used)}; it must use some '
                      f'of {sorted(allowed)} (as {{input}}) and nothing else (unknown: {bad})')


def _exemplar(ex: Any, i: int, dataset: str, stop: Sequence[str], path: str) -> dict:
  where = f'{path}: exemplar {i}'
  if not isinstance(ex, dict):
    raise PromptError(f'{where}: expected an object, got {type(ex).__name__}')
  where += f' ({ex.get("source", "no source")})'
  for key in ('output', 'source'):
    if not isinstance(ex.get(key), str) or not ex[key]:
      raise PromptError(f'{where}: field {key!r} must be a non-empty string')
  row = {k: v for k, v in ex.items() if k not in ('output', 'source')}
  if dataset in ('esnli', 'anli1') and isinstance(row.get('label'), str):
    if row['label'] not in sources.NLI_LABELS:
      raise PromptError(f'{where}: label {row["label"]!r} is not one of {sources.NLI_LABELS}')
    row['label'] = sources.NLI_LABELS.index(row['label'])
  reader = sources._READERS[dataset]  # pylint: disable=protected-access
  try:  # the same reader as the dataset's files: the exemplar renders like a real input
    example = reader({'id': f'exemplar {i}', **row, '_line': i}, path)
  except ValueError as e:
    raise PromptError(f'{where}: ' + str(e).split(': ', 1)[-1].replace(f'line {i}: ', '')) from e
  parsed = teacher_outputs.parse(dataset, ex['output'], example.get('choices'))
  same = (metrics.equations_equal(parsed.label, example['label']) if dataset == 'svamp'
          else parsed.label == example['label'])
  if parsed.failure or not same:
    raise PromptError(f'{where}: its output parses to label {parsed.label!r}'
                      f'{" (" + parsed.failure + ")" if parsed.failure else ""}, but its gold '
                      f'label is {example["label"]!r}; outputs must follow the PaLM format')
  for s in stop:
    if s in ex['output']:
      raise PromptError(f'{where}: its output contains the stop sequence {s!r}')
  return {**example, 'output': ex['output'], 'source': ex['source']}


def _shown(prompt: Prompt, text: str) -> str:
  return prompt.input_template.format(**template_fields(prompt.dataset, text))


def exemplar_text(prompt: Prompt, exemplar: dict) -> str:
  """One exemplar as the prompt shows it: its input in the template, then its output."""
  shown = _shown(prompt, exemplar['input'])
  return shown + exemplar['output'] if shown[-1:].isspace() else f'{shown} {exemplar["output"]}'


def render(prompt: Prompt, text: str) -> str:
  """The completion prompt for one input: instruction, exemplars, then the input."""
  parts = [prompt.instruction] if prompt.instruction else []
  parts += [exemplar_text(prompt, ex) for ex in prompt.exemplars]
  parts.append(_shown(prompt, text))
  return prompt.separator.join(parts)


def render_chat(prompt: Prompt, text: str) -> list[dict[str, str]]:
  """The same prompt as chat messages: one user/assistant turn per exemplar."""
  messages = [{'role': 'system', 'content': prompt.instruction}] if prompt.instruction else []
  for ex in prompt.exemplars:
    messages += [{'role': 'user', 'content': _shown(prompt, ex['input'])},
                 {'role': 'assistant', 'content': ex['output']}]
  messages.append({'role': 'user', 'content': _shown(prompt, text)})
  return messages
