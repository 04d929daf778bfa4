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
"""

from typing import Optional, Sequence

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
                         data_dir: Optional[str] = None, summary: Optional[dict] = None) -> str:
  """Writes the curated labels of every row of a source split as teacher `name`; returns the
  CoT file's path. labels[i] is None for a row to leave out."""
  rows = data_sources.read_examples(dataset, split, data_dir)
  if not len(rows) == len(labels) == len(rationales):
    raise ValueError(f'{dataset} {split} has {len(rows)} rows; got {len(labels)} labels and '
                     f'{len(rationales)} rationales')
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
  return layout.write_outputs(folder, split, completions, records, summary)['completions']
