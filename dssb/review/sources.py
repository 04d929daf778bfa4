"""The vote table: every label signal for every example (example x source, abstain allowed).

Weak supervision (Snorkel's habit) starts from one matrix: a row per example, a column per label
source, a cell holding that source's label or nothing (the source abstains). Sources here:
  teacher        a teacher's label for the row (PaLM's released outputs, `python -m dssb.teacher
                 annotate` or `combine` outputs): the label its majority vote chose;
  sample         one of the n samples of an annotation (each its own source: self-consistency
                 votes become visible to the label model);
  narrow_prompt  an annotation made with a prompt aimed at one class (a teacher folder the
                 caller marks so);
  lf             a heuristic labeling function (dssb.review.lfs: plain Python over an example,
                 registered by name per dataset);
  gold           the dataset's own label (for measuring; combiners never read it);
  human          reviewers' exported decisions (dssb.review.decisions' export format).
Labels are the row's candidates (CQA: its five choices; NLI: entailment / neutral /
contradiction); a parsed label outside them is an abstention, counted per source.

On disk (through dssb.paths, so local or gs://), a folder:
  votes.parquet     one row per example: id, dataset, split, index, input, candidates, rationale,
                    drop (a reviewer dropped it), then one column `vote:{source}` per source
  sources.parquet   one row per source: name, kind, origin, prompt, sample, coverage, and
                    out_of_candidates (parsed labels outside the candidates, made abstentions)
`pd.read_parquet` reads both.
"""

import dataclasses
import io
import json
from typing import Callable, Iterable, Optional, Sequence

import pandas as pd

from dssb import paths
from dssb.data import sources as data_sources
from dssb.data import teacher_outputs
from dssb.review import lfs as lfs_lib

KINDS = ('teacher', 'sample', 'narrow_prompt', 'lf', 'gold', 'human')
VOTE_PREFIX = 'vote:'
VOTES_FILE = 'votes.parquet'
SOURCES_FILE = 'sources.parquet'
EXAMPLE_COLUMNS = ('id', 'dataset', 'split', 'index', 'input', 'candidates', 'rationale', 'drop')

@dataclasses.dataclass(frozen=True)
class Source:
  """Where one column of votes came from."""
  name: str
  kind: str
  origin: str = ''                # the folder or file read, or the function's module
  prompt: Optional[str] = None    # the annotation's prompt identity
  sample: Optional[int] = None    # sample index within an annotation (kind 'sample')

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'source {self.name!r}: kind {self.kind!r} is not one of {KINDS}')
    if not self.name or self.name.startswith(VOTE_PREFIX):
      raise ValueError(f'bad source name {self.name!r}')


@dataclasses.dataclass
class VoteTable:
  """examples (one row per example), votes (same rows; a column per source: label or None) and
  sources (one row per source: its provenance and coverage)."""
  examples: pd.DataFrame
  votes: pd.DataFrame
  sources: pd.DataFrame

  def source_names(self, kinds: Optional[Iterable[str]] = None) -> list:
    if kinds is None:
      return list(self.sources['name'])
    return list(self.sources.loc[self.sources['kind'].isin(list(kinds)), 'name'])

  def label_matrix(self, names: Sequence[str]):
    """int [n, len(names)]: each vote as its index in the row's candidates, -1 = abstain
    (Snorkel's convention)."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    matrix = np.full((len(self.examples), len(names)), -1, np.int64)
    for j, name in enumerate(names):
      for i, (vote, cands) in enumerate(zip(self.votes[name], self.examples['candidates'])):
        if vote is not None:
          matrix[i, j] = list(cands).index(vote)
    return matrix


def example_id(dataset: str, split: str, index: int) -> str:
  return f'{dataset}/{split}/{index}'


def candidates_of(dataset: str, row: dict) -> list:
  """The labels a row can take (CQA: its choices; NLI: the three labels)."""
  if dataset == 'cqa':
    return list(row['choices'])
  if dataset in ('esnli', 'anli1'):
    return list(data_sources.NLI_LABELS)
  raise ValueError(f'{dataset}: label sources need a finite candidate set per row (CQA, e-SNLI, '
                   'ANLI); SVAMP labels are open-ended equations')


def example_view(dataset: str, row: dict, rationale: Optional[str] = None) -> dict:
  """What a labeling function reads: input, candidates, rationale, and per dataset question
  (CQA) or premise and hypothesis (NLI)."""
  view = {'input': row['input'], 'candidates': candidates_of(dataset, row),
          'rationale': rationale}
  if dataset == 'cqa':
    view['question'] = row['input'].split('\nAnswer Choices:')[0]
  else:
    view['premise'], _, view['hypothesis'] = row['input'].partition(data_sources.EOS_JOIN)
  return view


def _column(labels: Sequence[Optional[str]], candidates: Sequence[Sequence[str]]):
  """(votes with labels outside the candidates made abstentions, how many were)."""
  out, outside = [], 0
  for label, cands in zip(labels, candidates):
    label = label.strip() if isinstance(label, str) else None
    if label and label not in cands:
      outside += 1
      label = None
    out.append(label or None)
  return out, outside


def teacher_columns(dataset: str, split: str, teacher: str, rows: list,
                    data_dir: Optional[str] = None, kind: str = 'teacher',
                    samples: bool = True):
  """[(Source, labels, rationales)] of one teacher folder: its chosen label, and with
  `samples` each of its n samples as its own source when it is an annotation with n > 1.

  An annotation (`{split}_annotations.jsonl` beside the CoT files) gives the samples and the
  prompt; other folders (PaLM's released outputs, a combined teacher) are parsed from their CoT
  files as the trainer parses them.
  """
  folder = data_sources.teacher_dir(dataset, teacher, data_dir)
  records_path = paths.path(folder, f'{split}_annotations.jsonl')
  texts = data_sources.read_teacher_outputs(dataset, split, teacher, data_dir, expected=len(rows))
  parsed = teacher_outputs.parse_all(dataset, texts, [r.get('choices') for r in rows])
  labels = [None if p.failure else p.label for p in parsed]
  rationales = [p.rationale for p in parsed]
  prompt = None
  summary_path = paths.path(folder, f'{split}_summary.json')
  if summary_path.exists():
    prompt = json.loads(summary_path.read_text()).get('prompt')
  out = [(Source(teacher, kind, folder, prompt), labels, rationales)]
  if samples and records_path.exists():
    records = data_sources.read_jsonl(str(records_path))
    if len(records) != len(rows):
      raise ValueError(f'{records_path}: {len(records)} records for {len(rows)} input rows')
    n = len(records[0].get('samples') or []) if records else 0
    if n > 1:
      for k in range(n):
        sample_labels = []
        for r in records:
          if len(r['samples']) != n:
            raise ValueError(f"{records_path} line {r['_line']}: {len(r['samples'])} samples, "
                             f'expected {n}')
          s = r['samples'][k]
          sample_labels.append(None if s.get('failure') else s.get('label'))
        out.append((Source(f'{teacher}_sample_{k}', 'sample', str(records_path), prompt, k),
                    sample_labels, None))
  return out


def read_decisions(path: str) -> list:
  """Reviewers' exported decisions (JSONL or CSV), validated by dssb.review.decisions."""
  from dssb.review import decisions  # pylint: disable=g-import-not-at-top
  return decisions.read_export(path)


def human_columns(decisions: Sequence[dict], ids: Sequence[str], name: str = 'human'):
  """(labels, drop flags) aligned with `ids`: relabel and keep vote their label, drop flags the
  example (no vote), skip is nothing. Later decisions on one id replace earlier ones."""
  by_id = {}
  for d in decisions:
    if d['action'] != 'skip':
      by_id[d['id']] = d
  unknown = sorted(set(by_id) - set(ids))
  if unknown:
    raise ValueError(f'source {name!r}: {len(unknown)} decisions name examples not in the table '
                     f'(first {unknown[0]!r})')
  labels = [by_id[i]['label'] if i in by_id and by_id[i]['action'] in ('relabel', 'keep')
            else None for i in ids]
  drops = [i in by_id and by_id[i]['action'] == 'drop' for i in ids]
  return labels, drops


def build(dataset: str, split: str, *, teachers: Sequence[tuple] = (('palm', None),),
          lfs: Optional[Sequence[str]] = None, gold: bool = True,
          decisions: Sequence[tuple] = (), data_dir: Optional[str] = None,
          samples: bool = True, progress: bool = False) -> VoteTable:
  """The vote table of one source split.

  Args:
    dataset: 'cqa', 'esnli' or 'anli1'.
    split: a source split ('train', 'test', 'valid').
    teachers: (teacher name, data folder or None, [kind]) in order; the first gives the inputs
      and the rationale column. kind defaults to 'teacher' ('narrow_prompt' for a class-aimed
      prompt).
    lfs: labeling function names (None: all registered for the dataset; () none).
    gold: add the gold label as source 'gold'.
    decisions: (source name, exported decisions file) pairs.
    data_dir: default data folder (else $DSSB_DATA_DIR).
    samples: add each annotation sample as its own source.
    progress: a tqdm bar over the labeling functions.
  """
  if not teachers:
    raise ValueError('build: at least one teacher (the inputs come from the first)')
  first_dir = teachers[0][1] or data_dir
  rows = data_sources.read_examples(dataset, split, first_dir)
  candidates = [candidates_of(dataset, r) for r in rows]
  ids = [example_id(dataset, split, r['row']) for r in rows]
  columns, meta, rationales = {}, [], None

  def add(source, labels):
    if source.name in columns:
      raise ValueError(f'two sources are named {source.name!r}')
    labels, outside = _column(labels, candidates)
    columns[source.name] = labels
    meta.append({**dataclasses.asdict(source), 'out_of_candidates': outside})

  for entry in teachers:
    teacher, folder = entry[0], entry[1] or data_dir
    kind = entry[2] if len(entry) > 2 else 'teacher'
    for source, labels, rats in teacher_columns(dataset, split, teacher, rows, folder, kind,
                                                samples):
      add(source, labels)
      if rationales is None and rats is not None:
        rationales = rats
  registered = lfs_lib.registered(dataset)
  names = list(registered) if lfs is None else list(lfs)
  missing = [n for n in names if n not in registered]
  if missing:
    raise ValueError(f'no labeling function {missing[0]!r} for {dataset}; registered: '
                     f'{sorted(registered)}')
  views = [example_view(dataset, r, rat) for r, rat in zip(rows, rationales)]
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  for name in tqdm(names, desc='labeling functions', disable=not progress):
    fn = registered[name]
    add(Source(name, 'lf', f'{fn.__module__}.{fn.__qualname__}'), [fn(v) for v in views])
  if gold:
    add(Source('gold', 'gold', data_sources.source_path(dataset, split, first_dir)),
        [r['label'] for r in rows])
  drop = [False] * len(rows)
  for name, path in decisions:
    labels, drops = human_columns(read_decisions(path), ids, name)
    add(Source(name, 'human', str(path)), labels)
    drop = [a or b for a, b in zip(drop, drops)]
  examples = pd.DataFrame({'id': ids, 'dataset': dataset, 'split': split,
                           'index': [r['row'] for r in rows],
                           'input': [r['input'] for r in rows], 'candidates': candidates,
                           'rationale': rationales, 'drop': drop})
  votes = pd.DataFrame(columns, dtype=object)
  table = _meta_frame(meta)
  table['coverage'] = [sum(v is not None for v in columns[n]) / max(len(rows), 1)
                       for n in table['name']]
  return VoteTable(examples, votes, table)


def _meta_frame(records: list) -> pd.DataFrame:
  """The sources table: text fields as objects (None stays None), counts as numbers."""
  frame = pd.DataFrame(records, dtype=object)
  for column in ('out_of_candidates', 'coverage'):
    if column in frame:
      frame[column] = pd.to_numeric(frame[column])
  return frame


def write_parquet(frame: pd.DataFrame, path) -> None:
  buffer = io.BytesIO()
  frame.to_parquet(buffer, index=False)
  target = paths.path(path)
  tmp = target.with_name(target.name + '.tmp')
  tmp.write_bytes(buffer.getvalue())
  tmp.replace(target)


def read_parquet(path) -> pd.DataFrame:
  path = paths.path(path)
  if not path.exists():
    raise FileNotFoundError(f'{path}: no such file (write it with `python -m dssb.review sources`)')
  return pd.read_parquet(io.BytesIO(path.read_bytes()))


def write(table: VoteTable, folder: str) -> dict:
  """Writes votes.parquet and sources.parquet into `folder` (local or gs://); their paths."""
  paths.path(folder).mkdir(parents=True, exist_ok=True)
  wide = pd.concat([table.examples.reset_index(drop=True),
                    table.votes.reset_index(drop=True).add_prefix(VOTE_PREFIX)], axis=1)
  out = {'votes': str(paths.path(folder, VOTES_FILE)),
         'sources': str(paths.path(folder, SOURCES_FILE))}
  write_parquet(wide, out['votes'])
  write_parquet(table.sources, out['sources'])
  return out


def read(folder: str) -> VoteTable:
  """The table `write` wrote."""
  wide = read_parquet(paths.path(folder, VOTES_FILE))
  meta = read_parquet(paths.path(folder, SOURCES_FILE))
  vote_cols = [c for c in wide.columns if c.startswith(VOTE_PREFIX)]
  names = [c[len(VOTE_PREFIX):] for c in vote_cols]
  if names != list(meta['name']):
    raise ValueError(f'{folder}: {VOTES_FILE} has sources {names}, {SOURCES_FILE} lists '
                     f'{list(meta["name"])}')
  examples = wide[[c for c in wide.columns if c not in vote_cols]].copy()
  examples['candidates'] = [list(c) for c in examples['candidates']]
  votes = wide[vote_cols].copy()
  votes.columns = names
  votes = votes.astype(object).where(votes.notna(), None)
  meta = _meta_frame(meta.astype(object).where(meta.notna(), None).to_dict('records'))
  return VoteTable(examples, votes, meta)


def add_source(table: VoteTable, source: Source, labels: Sequence[Optional[str]]) -> VoteTable:
  """A copy of `table` with one more source (labels aligned with its rows)."""
  if len(labels) != len(table.examples):
    raise ValueError(f'source {source.name!r}: {len(labels)} labels for '
                     f'{len(table.examples)} examples')
  if source.name in table.votes.columns:
    raise ValueError(f'the table already has a source {source.name!r}')
  labels, outside = _column(labels, list(table.examples['candidates']))
  votes = table.votes.copy()
  votes[source.name] = pd.Series(labels, index=votes.index, dtype=object)
  row = {**dataclasses.asdict(source), 'out_of_candidates': outside,
         'coverage': sum(v is not None for v in labels) / max(len(labels), 1)}
  meta = _meta_frame(table.sources.to_dict('records') + [row])
  return VoteTable(table.examples.copy(), votes, meta)


# --- command line: python -m dssb.review sources ---------------------------------------------


def _pair(text: str, what: str) -> tuple:
  name, _, value = text.partition('=')
  if not name:
    raise ValueError(f'{what} {text!r}: expected NAME or NAME=PATH')
  return name, value or None


def add_arguments(parser) -> None:
  parser.add_argument('--dataset', required=True, choices=('cqa', 'esnli', 'anli1'))
  parser.add_argument('--split', required=True, help="a source split: 'train', 'test', 'valid'")
  parser.add_argument('--teacher', action='append', default=None, metavar='NAME[=DATA_DIR]',
                      help="a teacher's outputs (repeatable; default palm). DATA_DIR: the "
                      '`annotate --out` folder (default $DSSB_DATA_DIR); the first gives inputs')
  parser.add_argument('--narrow_prompt', action='append', default=[], metavar='NAME[=DATA_DIR]',
                      help='an annotation made with a prompt aimed at one class')
  parser.add_argument('--lfs', nargs='*', default=None,
                      help='labeling functions by name (default: all of the dataset; none: '
                      '--lfs with no names)')
  parser.add_argument('--decisions', action='append', default=[], metavar='NAME=FILE',
                      help='exported review decisions (python -m dssb.review export) as a source')
  parser.add_argument('--no_gold', action='store_true', help='leave out the gold source')
  parser.add_argument('--no_samples', action='store_true',
                      help="leave out each annotation sample's own source")
  parser.add_argument('--data_dir', default=None, help='default data folder ($DSSB_DATA_DIR)')
  parser.add_argument('--out', required=True, help='folder for votes.parquet and sources.parquet '
                      '(local or gs://)')


def run(args) -> int:
  teachers = [_pair(t, '--teacher') for t in (args.teacher or ['palm'])]
  teachers += [(*_pair(t, '--narrow_prompt'), 'narrow_prompt') for t in args.narrow_prompt]
  decisions = []
  for d in args.decisions:
    name, path = _pair(d, '--decisions')
    if not path:
      raise ValueError(f'--decisions {d!r}: expected NAME=FILE')
    decisions.append((name, path))
  table = build(args.dataset, args.split, teachers=teachers, lfs=args.lfs,
                gold=not args.no_gold, decisions=decisions, data_dir=args.data_dir,
                samples=not args.no_samples, progress=True)
  written = write(table, args.out)
  shown = table.sources[['name', 'kind', 'coverage', 'out_of_candidates']]
  print(shown.to_string(index=False, float_format=lambda x: f'{x:.3f}'))
  dropped = int(table.examples['drop'].sum())
  print(f'{len(table.examples)} examples x {len(shown)} sources; {dropped} '
        f"dropped by reviewers; wrote {written['votes']} and {written['sources']}")
  return 0
