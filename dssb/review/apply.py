"""After review: a curated training label set (relabel, drop, keep; the unreviewed flagged rows
kept, dropped, or relabelled from confident neighbours).

Per row of the vote table, the label training will use:
  reviewed    the reviewer's decision: relabel (their label), keep (the given label), drop (none);
  flagged, not reviewed, by `unreviewed`:
      keep        the given label (the review budget ran out; nothing changes)
      drop        no label (the row leaves training)
      neighbours  relabelled where confident neighbours agree on another label, else kept:
                  'student' reads the cross-fitted student's probabilities (its label where it
                  reaches `threshold`); 'spread' is scikit-learn's LabelSpreading over TF-IDF
                  features of the inputs (fixed label sets: NLI), the unflagged rows' labels
                  spreading to the flagged ones;
  the rest    the given label (rows with none stay without).
Writes `curated.parquet` (id, label, action) and, with --teacher_folder, the label set as a
teacher folder the trainer reads unchanged (dssb.review.curated).

--soft (with a combiner as --label_source, and --teacher_folder) also writes each row's label
distribution for soft-label training (dssb.data.soft_labels): the combiner's probabilities over
the row's candidates where its label stands (given, unreviewed_keep), a one-hot on the label
where a person or a neighbour decided it (relabel, keep, neighbour_relabel), none where the row
leaves training. Train on it with --gin.tasks.get_task_name.soft_labels=True.
"""

import argparse
import collections
import sys
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from dssb import paths
from dssb.data import sources as data_sources
from dssb.review import combine
from dssb.review import curated
from dssb.review import flag
from dssb.review import sources

CURATED_FILE = 'curated.parquet'
UNREVIEWED = ('keep', 'drop', 'neighbours')
NEIGHBOURS = ('student', 'spread')


def student_relabels(probs: Sequence[np.ndarray], candidates: Sequence[Sequence[str]],
                     threshold: float = 0.5) -> list:
  """The student's label where its out-of-fold probability reaches `threshold`, else None."""
  out = []
  for p, cands in zip(probs, candidates):
    j = int(np.argmax(p))
    out.append(cands[j] if p[j] >= threshold else None)
  return out


def spread_relabels(texts: Sequence[str], labels: Sequence[Optional[str]],
                    targets: Sequence[bool], classes: Sequence[str], n_neighbors: int = 10,
                    seed: int = 0) -> list:
  """LabelSpreading over TF-IDF (SVD to 100 dimensions) of the inputs: the labels of the
  non-target rows spread to the `targets` rows; the spread label of each target row (else None)."""
  from sklearn.decomposition import TruncatedSVD  # pylint: disable=g-import-not-at-top
  from sklearn.feature_extraction.text import TfidfVectorizer  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import normalize  # pylint: disable=g-import-not-at-top
  from sklearn.semi_supervised import LabelSpreading  # pylint: disable=g-import-not-at-top
  features = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(
      [t.replace(data_sources.EOS_JOIN, ' || ') for t in texts])
  dense = normalize(TruncatedSVD(100, random_state=seed).fit_transform(features))
  y = np.asarray([classes.index(l) if l is not None and not t else -1
                  for l, t in zip(labels, targets)])
  model = LabelSpreading(kernel='knn', n_neighbors=n_neighbors, max_iter=100).fit(dense, y)
  return [classes[int(model.transduction_[i])] if t else None for i, t in enumerate(targets)]


def curate(ids: Sequence[str], given: Sequence[Optional[str]], flagged: Sequence[str],
           decisions: Sequence[dict], unreviewed: str = 'keep',
           relabels: Optional[Sequence[Optional[str]]] = None):
  """(labels, actions) per row. actions: given, relabel, keep, drop, unreviewed_keep,
  unreviewed_drop, neighbour_relabel, no_label."""
  if unreviewed not in UNREVIEWED:
    raise ValueError(f'unreviewed must be one of {UNREVIEWED}, got {unreviewed!r}')
  if unreviewed == 'neighbours' and relabels is None:
    raise ValueError("unreviewed='neighbours' needs the neighbours' labels")
  decided = {d['id']: d for d in decisions if d['action'] != 'skip'}
  position = {i: n for n, i in enumerate(ids)}
  unknown = [i for i in list(decided) + list(flagged) if i not in position]
  if unknown:
    raise ValueError(f'{len(unknown)} reviewed or flagged ids are not in the vote table (first '
                     f'{unknown[0]!r}): was the queue made from another table?')
  flagged = set(flagged)
  labels, actions = [], []
  for n, (i, g) in enumerate(zip(ids, given)):
    if i in decided:
      d = decided[i]
      label = {'relabel': d.get('label'), 'keep': g, 'drop': None}[d['action']]
      action = d['action']
    elif i in flagged and unreviewed == 'drop':
      label, action = None, 'unreviewed_drop'
    elif i in flagged and unreviewed == 'neighbours' and relabels[n] not in (None, g):
      label, action = relabels[n], 'neighbour_relabel'
    elif i in flagged:
      label, action = g, 'unreviewed_keep'
    else:
      label, action = g, 'given' if g is not None else 'no_label'
    labels.append(label)
    actions.append(action)
  return labels, actions


def label_distributions(labels: Sequence[Optional[str]], actions: Sequence[str],
                        candidates: Sequence[Sequence[str]],
                        probs: Sequence[Sequence[float]]) -> list:
  """Per row {label: probability} for soft-label training, or None (no label).

  The combiner's probabilities (over the row's candidates; a candidate listed twice adds up)
  where its label stands; a one-hot where a decision replaced or confirmed it.
  """
  out = []
  for label, action, cands, p in zip(labels, actions, candidates, probs, strict=True):
    if label is None:
      out.append(None)
    elif action in ('given', 'unreviewed_keep'):
      dist = collections.defaultdict(float)
      for c, v in zip(cands, p, strict=True):
        dist[c] += float(v)
      total = sum(dist.values())
      out.append({c: v / total for c, v in dist.items()})
    else:
      out.append({label: 1.0})
  return out


def read_curated(path: str) -> pd.DataFrame:
  """curated.parquet: id, label (None where the row leaves training), action."""
  frame = sources.read_parquet(path)
  frame['label'] = frame['label'].astype(object).where(frame['label'].notna(), None)
  return frame


def read_queue(path: str) -> list:
  """The queue's ids in rank order."""
  return [r['id'] for r in data_sources.read_jsonl(str(path))]


# --- command line: python -m dssb.review apply -----------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--votes', required=True, help='the vote table folder')
  parser.add_argument('--queue', required=True, help='the review queue (python -m dssb.review '
                      'flag --out)')
  parser.add_argument('--decisions', action='append', default=[],
                      help='exported decisions (python -m dssb.review export; repeatable)')
  parser.add_argument('--label_source', default='palm',
                      help='the given labels (as for flag): a source or a combiner')
  parser.add_argument('--unreviewed', default='keep', choices=UNREVIEWED,
                      help='what happens to flagged rows nobody reviewed')
  parser.add_argument('--neighbours', default='student', choices=NEIGHBOURS)
  parser.add_argument('--threshold', type=float, default=0.5,
                      help="'student' neighbours: the probability the relabel needs")
  parser.add_argument('--teacher_folder', default=None,
                      help='also write the labels as a teacher folder here (DSSB_DATA_DIR for '
                      'the trainer)')
  parser.add_argument('--teacher_name', default='curated',
                      help="the teacher's name in that folder (--gin.TEACHER)")
  parser.add_argument('--soft', action='store_true',
                      help="also write the label distributions (the combiner's probabilities; "
                      'one-hot where a decision was made) into the teacher folder, for '
                      '--gin.tasks.get_task_name.soft_labels=True; needs a combiner as '
                      '--label_source and --teacher_folder')
  parser.add_argument('--data_dir', default=None, help='the inputs ($DSSB_DATA_DIR)')
  parser.add_argument('--out', default=None, help='curated.parquet (default VOTES/curated.parquet)')


def run(args) -> int:
  if args.soft and (args.label_source not in combine.METHODS or not args.teacher_folder):
    raise SystemExit(f'--soft needs a combiner as --label_source ({", ".join(combine.METHODS)}) '
                     f'and --teacher_folder; got --label_source {args.label_source!r}' +
                     ('' if args.teacher_folder else ' and no --teacher_folder'))
  table = sources.read(args.votes)
  combined = combine.read(args.votes) if args.label_source in combine.METHODS else None
  given = flag.given_labels(table, args.label_source, combined)
  ids = list(table.examples['id'])
  queue = read_queue(args.queue)
  decisions = [d for path in args.decisions for d in sources.read_decisions(path)]
  relabels = None
  if args.unreviewed == 'neighbours':
    candidates = list(table.examples['candidates'])
    if args.neighbours == 'student':
      student = flag.read_student(args.votes).set_index('id').loc[ids]
      relabels = student_relabels(list(student['probs']), candidates, args.threshold)
    else:
      classes = candidates[0]
      if any(list(c) != list(classes) for c in candidates):
        raise ValueError("--neighbours spread needs one label set for every row (NLI); use "
                         "'student' for per-row candidates (CQA)")
      queued = set(queue)
      relabels = spread_relabels(list(table.examples['input']), given,
                                 [i in queued for i in ids], list(classes))
  labels, actions = curate(ids, given, queue, decisions, args.unreviewed, relabels)
  out = args.out or str(paths.path(args.votes, CURATED_FILE))
  sources.write_parquet(pd.DataFrame({'id': ids, 'label': labels, 'action': actions}), out)
  counts = collections.Counter(actions)
  print('actions: ' + ', '.join(f'{a} {n}' for a, n in sorted(counts.items())), file=sys.stderr)
  if 'gold' in table.votes.columns:
    gold = list(table.votes['gold'])
    kept = [(l, g) for l, g in zip(labels, gold) if l is not None]
    before = [(l, g) for l, g in zip(given, gold) if l is not None]
    print(f'against gold: {100 * np.mean([l == g for l, g in before]):.2f}% of {len(before)} '
          f'given labels right -> {100 * np.mean([l == g for l, g in kept]):.2f}% of '
          f'{len(kept)} curated', file=sys.stderr)
  print(f'wrote {out}', file=sys.stderr)
  if args.teacher_folder:
    dataset, split = table.examples['dataset'][0], table.examples['split'][0]
    # a rationale argues for the teacher's label: kept with it, left empty where it changed
    rationales = [r if a in ('given', 'keep', 'unreviewed_keep') else ''
                  for r, a in zip(table.examples['rationale'], actions)]
    n = len(data_sources.read_examples(dataset, split, args.data_dir))
    full_labels, full_rationales = [None] * n, [''] * n  # rows outside the table: left out
    for i, label, rationale in zip(table.examples['index'], labels, rationales):
      full_labels[int(i)], full_rationales[int(i)] = label, rationale
    full_probs = None
    if args.soft:
      dists = label_distributions(labels, actions, list(table.examples['candidates']),
                                  list(combined[f'{args.label_source}_probs']))
      full_probs = [None] * n
      for i, dist in zip(table.examples['index'], dists):
        full_probs[int(i)] = dist
    path = curated.write_teacher_folder(args.teacher_folder, dataset, split, args.teacher_name,
                                        full_labels, full_rationales, args.data_dir,
                                        {'actions': dict(counts), 'soft': bool(args.soft)},
                                        label_probs=full_probs)
    print(f"wrote {path}: train with DSSB_DATA_DIR={args.teacher_folder} "
          f"--gin.TEACHER=\"'{args.teacher_name}'\" --gin.PARSE_FAILURES=\"'drop'\""
          + (' --gin.tasks.get_task_name.soft_labels=True (the label distributions)'
             if args.soft else ''), file=sys.stderr)
  return 0
