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
    `rank_scores`: each candidate label's log-probability given the input, by one
    teacher-forced decoder pass per batch of candidate sets over one encoder pass (rank
    classification, not decoding).
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
                batch_size: int = 32, mesh=None, rules=None, progress: bool = False):
  """Sum of target-token log-probabilities of each candidate given its input: [n] arrays.

  One encoder pass per batch of inputs; then the batch's (input, candidate) pairs, grouped by
  candidate length (a long choice does not pad the short ones), each group one teacher-forced
  decoder pass over the encoded inputs it gathers (EOS included in each candidate's score, so a
  candidate that is a prefix of another is not favoured). Shapes are bucketed to powers of two
  (dssb.inference.bucket), so a handful of programs compile.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from dssb import inference  # pylint: disable=g-import-not-at-top
  from dssb import sharding  # pylint: disable=g-import-not-at-top
  tokenizer = inference.Tokenizer(model.vocab_path)
  mesh = mesh or sharding.make_mesh()
  rules = rules or sharding.logical_axis_rules()
  encode, decode = _candidate_scorer(model.config)
  out = []
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  for start in tqdm(range(0, len(inputs), batch_size), desc='rank classification',
                    disable=not progress):
    batch_in = [tokenizer.encode(x) for x in inputs[start:start + batch_size]]
    batch_cands = [[tokenizer.encode(c) for c in cands]
                   for cands in candidates[start:start + batch_size]]
    rows = batch_size if len(inputs) > batch_size else inference.bucket(len(batch_in), 1)
    enc = np.zeros((rows, inference.bucket(max(map(len, batch_in)))), np.int32)
    for i, ids in enumerate(batch_in):
      enc[i, :len(ids)] = ids
    scores = [np.zeros(len(c)) for c in batch_cands]
    groups = {}
    for i, cands in enumerate(batch_cands):
      for j, t in enumerate(cands):
        groups.setdefault(inference.bucket(len(t), 4), []).append((i, j, t))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      encoded = encode(model.params, enc)
      for length, pairs in sorted(groups.items()):
        size = inference.bucket(len(pairs), 8)
        index = np.zeros(size, np.int32)
        dec = np.zeros((size, length), np.int32)
        for p, (i, _, t) in enumerate(pairs):
          index[p], dec[p, :len(t)] = i, t
        got = np.asarray(decode(model.params, encoded, enc, index, dec))
        for p, (i, j, _) in enumerate(pairs):
          scores[i][j] = got[p]
    out.extend(scores)
  return out


@functools.lru_cache(maxsize=4)  # one compiled pair per architecture, not one per call
def _candidate_scorer(config):
  """(encode(params, tokens [B, L]), decode(params, encoded, tokens, row index [P],
  targets [P, T]) -> summed log-probabilities [P]), jitted."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from dssb.model import T5  # pylint: disable=g-import-not-at-top
  t5 = T5(config)

  @jax.jit
  def encode(params, enc_BxL):
    return t5.apply({'params': params}, enc_BxL, method=T5.encode)

  @jax.jit
  def decode(params, encoded_BxLxE, enc_BxL, index_P, targets_PxT):
    inputs = jnp.pad(targets_PxT[:, :-1], ((0, 0), (1, 0)))
    logits = t5.apply({'params': params}, encoded_BxLxE[index_P], enc_BxL[index_P], inputs,
                      targets_PxT, method=T5.decode)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)),
                               targets_PxT[..., None], -1)[..., 0]
    return jnp.where(targets_PxT > 0, logp, 0.0).sum(-1)

  return encode, decode


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
