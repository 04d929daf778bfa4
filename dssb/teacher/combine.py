"""Several teachers, one training signal: majority vote over their labels, agreement recorded.

Each teacher's completions (its `{split}_CoT_*.json`, PaLM's included) are parsed; the labels
vote (dssb.teacher.votes); the combined teacher's completion for a row is that of the first
teacher, in the order given, whose label won, so rationale and label stay one teacher's.

Filtering by agreement needs no change to the task code: with `min_agreement=k`, a row where
fewer than k teachers agree gets an empty completion, which the parsers read as a failure
(empty_label), and training with PARSE_FAILURES='drop' leaves it out. The per-row record
(`{split}_annotations.jsonl`: every teacher's label, who agreed, the agreement) is there for
weighting schemes that need more than a filter.
"""

from typing import Optional, Sequence

from dssb.data import sources
from dssb.data import teacher_outputs
from dssb.teacher import layout
from dssb.teacher import votes


def _percent(hits):
  return round(100.0 * sum(hits) / len(hits), 4) if hits else None


def combine(dataset: str, split: str, teachers: Sequence[tuple], name: str, out_dir: str, *,
            min_agreement: int = 1, data_dir: Optional[str] = None) -> dict:
  """Combines teachers' outputs for one source split; returns the summary.

  Args:
    dataset: 'cqa', 'svamp', 'esnli' or 'anli1'.
    split: the source split ('train', 'test', 'valid').
    teachers: (teacher name, data folder or None for data_dir) pairs, in priority order.
    name: the combined teacher's name (outputs in out_dir/datasets/{dataset}/llm_{name}/).
    out_dir: a data folder, laid out like an annotation's.
    min_agreement: rows where fewer teachers agree on the winning answer get an empty
      completion (a parse failure): train with PARSE_FAILURES='drop' to leave them out.
    data_dir: the inputs' data folder (default $DSSB_DATA_DIR).
  """
  if len(teachers) < 2:
    raise ValueError('combine needs at least two teachers')
  if not 1 <= min_agreement <= len(teachers):
    raise ValueError(f'min_agreement must be in [1, {len(teachers)}], got {min_agreement}')
  rows = sources.read_examples(dataset, split, teachers[0][1] or data_dir)
  choices = [r.get('choices') for r in rows]
  parsed, texts = {}, {}
  for teacher, folder in teachers:
    texts[teacher] = sources.read_teacher_outputs(dataset, split, teacher, folder or data_dir,
                                                  expected=len(rows))
    parsed[teacher] = teacher_outputs.parse_all(dataset, texts[teacher], choices)
  names = [t for t, _ in teachers]
  folder = layout.prepare(out_dir, dataset, split, name, teachers[0][1] or data_dir)
  completions, records, kept = [], [], []
  for i, row in enumerate(rows):
    labels = [None if parsed[t][i].failure else parsed[t][i].label for t in names]
    vote = votes.majority(dataset, labels)
    winner = names[vote.winner] if vote.winner is not None else None
    key = votes.answer_key(dataset, labels[vote.winner]) if winner else None
    agreed = [t for t, l in zip(names, labels)
              if l is not None and votes.answer_key(dataset, l) == key]
    keep = winner is not None and len(agreed) >= min_agreement
    kept.append(keep)
    completions.append(texts[winner][i] if keep else '')
    records.append({'row': row['row'], 'id': row['id'], 'gold': row['label'],
                    'labels': dict(zip(names, labels)), 'label': labels[vote.winner]
                    if winner else None, 'from': winner, 'agreed': agreed,
                    'agreement': len(agreed) / len(names), 'kept': keep})
  gold = [r['label'] for r in rows]
  accuracy = {t: _percent([l is not None and votes.is_correct(dataset, l, g)
                           for l, g in zip((r['labels'][t] for r in records), gold)])
              for t in names}
  accuracy['combined (kept rows)'] = _percent([votes.is_correct(dataset, r['label'], r['gold'])
                                               for r in records if r['kept']])
  summary = {
      'teacher': name, 'combines': names, 'dataset': dataset, 'split': split, 'rows': len(rows),
      'min_agreement': min_agreement, 'kept': sum(kept), 'dropped_as_parse_failures':
      len(rows) - sum(kept), 'accuracy': accuracy,
      'agreement_histogram': {f'{k}/{len(names)}': sum(len(r['agreed']) == k for r in records)
                              for k in range(len(names), -1, -1)},
  }
  paths = layout.write_outputs(folder, split, completions, records, summary)
  summary['files'] = paths
  return summary
