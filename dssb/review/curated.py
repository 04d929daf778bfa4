"""A label set as a teacher folder: the trainer trains on curated labels with no change.

`write_teacher_folder` lays out OUT as dssb.teacher.layout does for an annotation
(OUT/datasets/{dataset}/llm_{name}/{split}_CoT_0.json beside links to the inputs), one completion
per source row written in the teacher format the project's parsers read (dssb.data.
teacher_outputs): CQA "{rationale} So the answer is (c) {label}.", e-SNLI "{rationale}\\nAnswer:
{label}", ANLI "{rationale} So the answer is {label}.". A row with no label (dropped, or held out
of a fold) gets an empty completion, a parse failure: training with PARSE_FAILURES='drop' leaves
it out. So:

  DSSB_DATA_DIR=OUT python -m dssb.train ... --gin.TEACHER="'NAME'" \\
      --gin.PARSE_FAILURES="'drop'" --gin.LABEL_SOURCE="'teacher'"   # step_by_step
  (or --gin.RECIPE="'distill'": the curated label is the target)

trains on the curated labels, with the rationales kept for step-by-step. Every completion is
parsed back before it is written; a label the parser would read otherwise raises.

With `label_probs` (apply --soft), the folder also holds each row's label distribution
(`{split}_label_probs.json`, dssb.data.soft_labels): the completion keeps the curated label (the
combiner's most likely one), so the hard path is unchanged, and
--gin.tasks.get_task_name.soft_labels=True trains on the distribution instead (each candidate an
example weighted by its probability).
"""

from typing import Mapping, Optional, Sequence

from dssb import paths
from dssb.data import soft_labels
from dssb.data import sources as data_sources
from dssb.data import teacher_outputs
from dssb.teacher import layout


def completion(dataset: str, label: Optional[str], rationale: Optional[str],
               choices: Optional[Sequence[str]] = None) -> str:
  """The teacher-format completion of (rationale, label); '' for no label."""
  if label is None:
    return ''
  rationale = (rationale or '').strip()
  if dataset == 'cqa':
    letter = 'abcde'[list(choices).index(label)]
    return f'{rationale} So the answer is ({letter}) {label}.'.lstrip()
  if dataset == 'esnli':
    return f'{rationale}\nAnswer: {label}'
  if dataset == 'anli1':
    return f'{rationale} So the answer is {label}.'.lstrip()
  raise ValueError(f'{dataset}: curated label sets are written for CQA, e-SNLI and ANLI')


def write_teacher_folder(out_dir: str, dataset: str, split: str, name: str,
                         labels: Sequence[Optional[str]], rationales: Sequence[Optional[str]],
                         data_dir: Optional[str] = None, summary: Optional[dict] = None,
                         label_probs: Optional[Sequence[Optional[Mapping[str, float]]]] = None
                         ) -> str:
  """Writes the curated labels of every row of a source split as teacher `name`; returns the
  CoT file's path. labels[i] is None for a row to leave out. label_probs[i]: that row's label
  distribution (None where labels[i] is None; labels[i] must have a probability in it); without
  label_probs an earlier run's probabilities file is removed."""
  rows = data_sources.read_examples(dataset, split, data_dir)
  if not len(rows) == len(labels) == len(rationales):
    raise ValueError(f'{dataset} {split} has {len(rows)} rows; got {len(labels)} labels and '
                     f'{len(rationales)} rationales')
  if label_probs is not None:
    label_probs = [soft_labels.check_probs(p, f'{dataset} {split} row {i}')
                   for i, p in enumerate(label_probs)]
    if len(label_probs) != len(rows):
      raise ValueError(f'{dataset} {split} has {len(rows)} rows; got {len(label_probs)} '
                       'label distributions')
    for i, (label, p) in enumerate(zip(labels, label_probs)):
      if (label is None) != (p is None) or (p is not None and p.get(label, 0.0) <= 0):
        raise ValueError(f'{dataset} {split} row {i}: label {label!r} has no probability in '
                         f'its distribution {p}')
  completions = []
  for row, label, rationale in zip(rows, labels, rationales):
    text = completion(dataset, label, rationale, row.get('choices'))
    if label is not None:
      parsed = teacher_outputs.parse(dataset, text, row.get('choices'))
      if parsed.failure or parsed.label != label:
        raise ValueError(f"{dataset} {split} row {row['row']}: label {label!r} with its "
                         f'rationale parses back as {parsed.label!r} ({parsed.failure or "ok"})')
    completions.append(text)
  folder = layout.prepare(out_dir, dataset, split, name, data_dir)
  kept = sum(l is not None for l in labels)
  summary = {'teacher': name, 'dataset': dataset, 'split': split, 'rows': len(rows),
             'labelled': kept, 'left_out': len(rows) - kept, **(summary or {})}
  records = [{'row': r['row'], 'id': r['id'], 'label': l} for r, l in zip(rows, labels)]
  written = layout.write_outputs(folder, split, completions, records, summary)['completions']
  if label_probs is not None:
    soft_labels.write(folder, split, label_probs)
  elif paths.path(folder, f'{split}_label_probs.json').exists():
    paths.path(folder, f'{split}_label_probs.json').unlink()
  return written
