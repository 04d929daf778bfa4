"""Out-of-fold student probabilities: every row scored by a model that never trained on it.

Confident learning (cleanlab) judges a given label by a model's probability for it; a model
scoring its own training rows has memorised their labels, right or wrong, and flags nothing. So
the rows are split into k folds and each fold is scored by the student trained on the other k-1
(cross-fitting). `cross_fit` records, per fold model, the rows it trained on and the rows it
scored, and refuses to return if they meet.

Students:
  - `PairStudent`: scikit-learn logistic regression over hashed features of (example, candidate)
    pairs (CQA question words x choice words; NLI hypothesis words, words new to the hypothesis
    and overlap, each x the label), a softmax over the row's candidates. Fits 9k CQA rows in
    seconds: the "student can be a simple model" case.
  - the T5 student (`t5_fold_models`): the project's trainer per fold (python -m dssb.train on a
    teacher folder written by dssb.review.curated, held-out rows left out as parse failures), then
    `rank_scores`: each candidate label's log-probability given the input (rank
    classification, not decoding): one encoder pass per batch, each row's candidates packed
    into one teacher-forced decoder row (results/perf/rank_classification.md).
"""

import dataclasses
import functools
import os
import subprocess
import sys
from typing import Callable, Optional, Sequence

import numpy as np

from dssb.review import lfs

# ------------------------------------------------------------------------------------------------
# Folds and the cross-fitting loop


def fold_ids(n: int, k: int, seed: int, labels: Optional[Sequence] = None) -> np.ndarray:
  """Fold of each row (stratified by `labels` when given and every class has k rows)."""
  from sklearn.model_selection import KFold, StratifiedKFold  # pylint: disable=g-import-not-at-top
  if not 2 <= k <= n:
    raise ValueError(f'k must be in [2, {n}], got {k}')
  folds = np.empty(n, np.int64)
  index = np.arange(n)
  strata = None if labels is None else np.asarray([str(l) for l in labels])
  if strata is not None and min(np.unique(strata, return_counts=True)[1]) >= k:
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed).split(index, strata)
  else:
    splitter = KFold(k, shuffle=True, random_state=seed).split(index)
  for f, (_, held_out) in enumerate(splitter):
    folds[held_out] = f
  return folds


@dataclasses.dataclass
class FoldModel:
  """What one fold's model saw: the rows it trained on and the rows it scored (indices)."""
  fold: int
  trained_on: np.ndarray
  scored: np.ndarray


def cross_fit(fit_predict: Callable, n: int, k: int = 5, seed: int = 0,
              trainable: Optional[np.ndarray] = None, labels=None, progress: bool = False):
  """(out-of-fold probabilities [n] (one array per row), fold ids, [FoldModel]).

  fit_predict(train_rows, score_rows) -> (per-row probability arrays of score_rows, the rows
  the model actually trained on): the student may leave rows out (no label) but must say so.
  trainable: rows a model may train on (default all; dropped rows are scored, never trained on).
  """
  folds = fold_ids(n, k, seed, labels)
  trainable = np.ones(n, bool) if trainable is None else np.asarray(trainable, bool)
  probs, models = [None] * n, []
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  for f in tqdm(range(k), desc='folds', disable=not progress):
    train_rows = np.flatnonzero((folds != f) & trainable)
    score_rows = np.flatnonzero(folds == f)
    fold_probs, trained_on = fit_predict(train_rows, score_rows)
    trained_on = np.asarray(sorted(trained_on), np.int64)
    leaked = np.intersect1d(trained_on, score_rows)
    if leaked.size:
      raise AssertionError(f'fold {f}: the model trained on {leaked.size} rows it scores '
                           f'(first {leaked[0]})')
    if not np.isin(trained_on, train_rows).all():
      raise AssertionError(f'fold {f}: the model trained on rows outside its training folds')
    for i, p in zip(score_rows, fold_probs):
      probs[i] = np.asarray(p, np.float64)
    models.append(FoldModel(f, trained_on, score_rows))
  return probs, folds, models


def pad_probs(probs: Sequence[np.ndarray], width: Optional[int] = None) -> np.ndarray:
  """[n, width] with zeros past each row's candidates (cleanlab wants one matrix)."""
  width = width or max(len(p) for p in probs)
  out = np.zeros((len(probs), width))
  for i, p in enumerate(probs):
    out[i, :len(p)] = p
  return out


# ------------------------------------------------------------------------------------------------
# The scikit-learn student


def pair_features(view: dict, candidate: str, use_rationale: bool = False) -> list:
  """String features of (example, candidate), all conjoined with the candidate so a linear model
  scores how well the candidate fits this input."""
  if 'question' in view:  # CQA
    question = lfs.content_stems(view['question'])
    cand = lfs.content_stems(candidate) or {candidate.lower()}
    feats = [f'c={c}' for c in cand]
    feats += [f'q|c={q}|{c}' for q in question for c in cand]
    feats.append(f'overlap={len(question & cand)}')
  else:  # NLI
    hypothesis, premise = lfs.words(view['hypothesis']), set(lfs.words(view['premise']))
    new = [w for w in hypothesis if w not in premise]
    hyp_stems = lfs.content_stems(view['hypothesis'])
    share = len(hyp_stems & lfs.content_stems(view['premise'])) / max(len(hyp_stems), 1)
    feats = [f'y={candidate}', f'overlap={round(share * 5)}|{candidate}',
             f'new_count={min(len(new), 6)}|{candidate}']
    feats += [f'h={w}|{candidate}' for w in hypothesis]
    feats += [f'new={w}|{candidate}' for w in new]
    feats += [f'hh={a}_{b}|{candidate}' for a, b in zip(hypothesis, hypothesis[1:])]
  if use_rationale and view.get('rationale'):
    text = ' '.join(lfs.words(view['rationale']))
    named = ' '.join(lfs.words(candidate)) in text
    feats.append(f'rationale_names={named}')
    feats += [f'r={w}|{candidate}' for w in lfs.words(view['rationale'])[-12:]]
  return feats


class PairStudent:
  """Logistic regression over hashed (example, candidate) features; softmax over candidates."""

  def __init__(self, views: Sequence[dict], use_rationale: bool = False, c: float = 1.0,
               n_features: int = 1 << 18):
    from sklearn.feature_extraction import FeatureHasher  # pylint: disable=g-import-not-at-top
    self.views, self.c = list(views), c
    self.hasher = FeatureHasher(n_features, input_type='string', alternate_sign=False)
    self.use_rationale = use_rationale
    self.matrix = self._features(self.views)
    self.offsets = np.concatenate([[0], np.cumsum([len(v['candidates']) for v in self.views])])

  def _features(self, views):
    return self.hasher.transform([pair_features(v, cand, self.use_rationale)
                                  for v in views for cand in v['candidates']]).tocsr()

  def _fit(self, labels, train_rows, label_probs=None):
    from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
    model = LogisticRegression(C=self.c, max_iter=1000, solver='liblinear')
    x = self.matrix[self._pairs(train_rows)]
    if label_probs is None:
      y = np.concatenate([[c == labels[i] for c in self.views[i]['candidates']]
                          for i in train_rows]).astype(int)
      return model.fit(x, y)
    # Soft labels: each pair once as a positive weighted p(c) and once as a negative weighted
    # 1 - p(c), the expectation of the hard pair loss over the label distribution (as
    # dssb.data.soft_labels does for the trainer); zero weights are left out, so a one-hot
    # distribution fits exactly the hard labels' rows.
    p = np.concatenate([[label_probs[i].get(c, 0.0) for c in self.views[i]['candidates']]
                        for i in train_rows])
    both = np.concatenate([p, 1.0 - p])
    keep = both > 0
    y = np.concatenate([np.ones(len(p), int), np.zeros(len(p), int)])
    import scipy.sparse  # pylint: disable=g-import-not-at-top
    stacked = scipy.sparse.vstack([x, x]).tocsr()
    return model.fit(stacked[keep], y[keep], sample_weight=both[keep])

  def fit_score(self, labels: Sequence[Optional[str]], views: Sequence[dict],
                label_probs: Optional[Sequence[Optional[dict]]] = None) -> list:
    """Trains on every row with a label, then scores other examples (a held-out test set).
    label_probs: per row {candidate: probability}, trained on as soft targets instead."""
    rows = np.asarray([i for i, l in enumerate(labels) if l is not None], np.int64)
    scores = self._fit(labels, rows, label_probs).decision_function(self._features(views))
    sizes = [len(v['candidates']) for v in views]
    return softmax_rows(np.split(scores, np.cumsum(sizes)[:-1]))

  def _pairs(self, rows):
    return np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in rows])

  def fit_predict(self, labels: Sequence[Optional[str]]):
    """A fit_predict for cross_fit: trains on the rows with a label."""
    def fit_predict(train_rows, score_rows):
      train_rows = np.asarray([i for i in train_rows if labels[i] is not None], np.int64)
      model = self._fit(labels, train_rows)
      scores = model.decision_function(self.matrix[self._pairs(score_rows)])
      sizes = self.offsets[np.asarray(score_rows) + 1] - self.offsets[np.asarray(score_rows)]
      return softmax_rows(np.split(scores, np.cumsum(sizes)[:-1])), train_rows

    return fit_predict


# ------------------------------------------------------------------------------------------------
# The T5 student: rank classification


def rank_scores(model, inputs: Sequence[str], candidates: Sequence[Sequence[str]],
                batch_size: int = 32, mesh=None, rules=None, progress: bool = False,
                timings: Optional[dict] = None):
  """Sum of target-token log-probabilities of each candidate given its input: [n] arrays.

  Each input is encoded once, and its candidates are packed end to end into ONE decoder row
  (segment ids 1..C, inputs shifted right within each candidate): the row's cross-attention
  keys/values are projected once for all its candidates, self-attention stays within each
  candidate, and T5's relative position bias (key minus query position) is the same inside a
  packed segment as alone, so each score equals the candidate's own teacher-forced score (EOS
  included, so a candidate that is a prefix of another is not favoured). Rows are batched longest
  input first (as evaluation decodes them), and input and packed lengths are padded to the
  project's length buckets (input_pipeline.DEFAULT_LENGTH_BUCKETS), so few programs compile.
  timings: if a dict, gets seconds per phase added ('tokenize', 'host', 'device').
  """
  import time  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from dssb import inference  # pylint: disable=g-import-not-at-top
  from dssb import sharding  # pylint: disable=g-import-not-at-top
  clock = {'tokenize': 0.0, 'host': 0.0, 'device': 0.0}
  tick = time.perf_counter()
  tokenizer = inference.Tokenizer(model.vocab_path)
  enc_ids = [tokenizer.encode(x) for x in inputs]
  cand_ids = [[tokenizer.encode(c) for c in cands] for cands in candidates]
  clock['tokenize'] += time.perf_counter() - tick
  mesh = mesh or sharding.make_mesh()
  rules = rules or sharding.logical_axis_rules()
  score = _packed_scorer(model.config)
  out = [np.zeros(len(c)) for c in cand_ids]
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  for rows in tqdm(_packed_order(enc_ids, cand_ids, batch_size), desc='rank classification',
                   disable=not progress):
    tick = time.perf_counter()
    enc, targets, dec_in, segments = _pack_rows(enc_ids, cand_ids, rows, batch_size)
    clock['host'] += time.perf_counter() - tick
    tick = time.perf_counter()
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      logp = np.asarray(score(model.params, enc, dec_in, targets, segments))
    clock['device'] += time.perf_counter() - tick
    tick = time.perf_counter()
    width = segments.max() + 1  # per row, the sum of each segment's token log-probabilities
    sums = np.bincount((np.arange(len(segments))[:, None] * width + segments).ravel(),
                       logp.ravel().astype(np.float64), len(segments) * width)
    sums = sums.reshape(len(segments), width)
    for r, i in enumerate(rows):
      out[i] = sums[r, 1:len(cand_ids[i]) + 1]
    clock['host'] += time.perf_counter() - tick
  if timings is not None:
    for k, v in clock.items():
      timings[k] = timings.get(k, 0.0) + v
  return out


def _packed_order(enc_ids, cand_ids, batch_size: int) -> list:
  """Batches of row indices: longest input first (as dssb.input_pipeline.eval_order), and within
  one input length bucket longest packed candidates first, so each batch pads little on both
  sides (input lengths pad to their bucket anyway)."""
  from dssb import input_pipeline  # pylint: disable=g-import-not-at-top
  buckets = np.asarray(input_pipeline.DEFAULT_LENGTH_BUCKETS)
  enc_bucket = np.searchsorted(buckets, [len(x) for x in enc_ids])
  dec_len = np.asarray([sum(len(t) for t in c) for c in cand_ids])
  order = np.lexsort((-dec_len, -enc_bucket))
  return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def _pack_rows(enc_ids, cand_ids, rows, batch_size: int):
  """(encoder tokens, packed targets, decoder inputs, segment ids), padded to length buckets;
  the batch dimension is batch_size (or the rows' count's power of two, for a short call)."""
  from dssb import inference  # pylint: disable=g-import-not-at-top
  from dssb import input_pipeline  # pylint: disable=g-import-not-at-top
  buckets = input_pipeline.DEFAULT_LENGTH_BUCKETS
  size = batch_size if len(rows) == batch_size else inference.bucket(len(rows), 1)
  packed = [np.concatenate([np.asarray(t, np.int32) for t in cand_ids[i]] or
                           [np.zeros(0, np.int32)]) for i in rows]
  enc_len = input_pipeline.bucket_length(max(len(enc_ids[i]) for i in rows), 1 << 30, buckets)
  dec_len = input_pipeline.bucket_length(max(max(map(len, packed)), 1), 1 << 30, buckets)
  enc = np.zeros((size, enc_len), np.int32)
  targets = np.zeros((size, dec_len), np.int32)
  segments = np.zeros((size, dec_len), np.int32)
  for r, i in enumerate(rows):
    enc[r, :len(enc_ids[i])] = enc_ids[i]
    targets[r, :len(packed[r])] = packed[r]
    lengths = [len(t) for t in cand_ids[i]]
    segments[r, :len(packed[r])] = np.repeat(np.arange(1, len(lengths) + 1), lengths)
  # shifted right within each segment: 0 (BOS) at each candidate's first position
  dec_in = np.zeros_like(targets)
  same = segments[:, 1:] == segments[:, :-1]
  dec_in[:, 1:] = np.where(same, targets[:, :-1], 0)
  return enc, targets, dec_in, segments


@functools.lru_cache(maxsize=4)  # one compiled function per architecture, not one per call
def _packed_scorer(config):
  """score(params, encoder tokens [B, L], decoder inputs, targets, segment ids [B, T]) -> per
  target token log-probabilities [B, T] (0 at padding), jitted: one encoder pass, one packed
  teacher-forced decoder pass."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from dssb.model import T5  # pylint: disable=g-import-not-at-top
  t5 = T5(config)

  @jax.jit
  def score(params, enc_BxL, inputs_BxT, targets_BxT, segments_BxT):
    encoded = t5.apply({'params': params}, enc_BxL, method=T5.encode)
    logits = t5.apply({'params': params}, encoded, enc_BxL, inputs_BxT, targets_BxT,
                      decoder_segment_ids=segments_BxT, method=T5.decode)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)),
                               targets_BxT[..., None], -1)[..., 0]
    return jnp.where(targets_BxT > 0, logp, 0.0)

  return score


def softmax_rows(scores: Sequence[np.ndarray]) -> list:
  out = []
  for s in scores:
    e = np.exp(s - s.max())
    out.append(e / e.sum())
  return out


def train_fold_student(data_dir: str, teacher: str, model_dir: str, gin_files: Sequence[str],
                       overrides: Sequence[str] = (), log_path: Optional[str] = None) -> None:
  """Trains a T5 on teacher `teacher` of `data_dir` with the project's trainer (a fresh process:
  gin's global config stays per run). Rows without a label are left out (PARSE_FAILURES drop)."""
  cmd = [sys.executable, '-m', 'dssb.train', *[f'--gin_file={g}' for g in gin_files],
         f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TEACHER='{teacher}'",
         "--gin.PARSE_FAILURES='drop'", *overrides]
  env = dict(os.environ, DSSB_DATA_DIR=data_dir)
  with open(log_path or os.devnull, 'w') as log:
    run = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
  if run.returncode:
    raise RuntimeError(f'training the fold student failed (exit {run.returncode}): '
                       f'{" ".join(cmd)}; log: {log_path}')


def t5_fit_predict(dataset: str, split: str, labels, rationales, views, work_dir: str,
                   gin_files: Sequence[str], overrides: Sequence[str] = (),
                   data_dir: Optional[str] = None, prefix: str = '', batch_size: int = 32):
  """A fit_predict for cross_fit (rows = the source split's rows): per fold, the held-out rows
  and unlabeled rows are written without a label (dssb.review.curated), the trainer trains on
  the rest, and the rows it read are taken from the same split code the trainer uses."""
  from dssb import inference  # pylint: disable=g-import-not-at-top
  from dssb.data import splits  # pylint: disable=g-import-not-at-top
  from dssb.review import curated  # pylint: disable=g-import-not-at-top
  counter = iter(range(1 << 30))

  def fit_predict(train_rows, score_rows):
    f = next(counter)
    name = f'fold{f}'
    train_set = set(int(i) for i in train_rows)
    fold_labels = [l if i in train_set else None for i, l in enumerate(labels)]
    folder = os.path.join(work_dir, name)
    curated.write_teacher_folder(folder, dataset, split, name, fold_labels, rationales, data_dir)
    model_dir = os.path.join(folder, 'run')
    train_fold_student(folder, name, model_dir, gin_files, overrides,
                       os.path.join(folder, 'train.log'))
    read = splits.load_split(dataset, 'train', teacher=name, parse_failures='drop',
                             data_dir=folder)
    trained_on = [r['row'] for r in read]
    model = inference.load_model(model_dir)
    scores = rank_scores(model, [prefix + views[i]['input'] for i in score_rows],
                         [views[i]['candidates'] for i in score_rows], batch_size)
    return softmax_rows(scores), trained_on

  return fit_predict
