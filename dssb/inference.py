"""A dssb checkpoint as a text completer: load it, tokenize, decode batches of prompts.

Serves `python -m dssb.serve` and the in-process teacher backend (dssb.teacher.backends).
Checkpoints: a trainer MODEL_DIR (orbax `checkpoints/<step>` or `best/<step>`; the model config
and vocabulary path come from the checkpoint's meta), or a T5X / Hugging Face folder plus a
SentencePiece vocabulary. Params are placed on the trainer's mesh by its logical axis rules, so a
model too big for one device is sharded as in training.

Shapes are bucketed (batch to a power of two, input and decode lengths to powers of two from
16) so that a server compiles a handful of programs, not one per request mix. Rows of one
`generate` call share the temperature and top_k; each row has its own seed, so its sample does
not depend on the other rows of the batch.
"""

import dataclasses
from typing import Optional, Sequence

import flax.linen as nn
import jax
import numpy as np

from dssb import paths, run_checkpoints, sharding
from dssb.model import EOS_ID, T5Config, generate

EOS_JOIN = '</s>'  # as in dssb.data.sources: the NLI inputs join premise and hypothesis by eos
MIN_BUCKET = 16


class InferenceError(ValueError):
  """A checkpoint or a request that cannot be served; the message says what is wrong."""


@dataclasses.dataclass(frozen=True)
class Request:
  """One completion to decode. temperature 0 is greedy decoding."""
  prompt: str
  max_tokens: int
  temperature: float = 0.0
  top_k: Optional[int] = None
  seed: int = 0
  stop: tuple = ()

  def group(self) -> tuple:
    """Rows with the same group can share one `generate` call."""
    return (self.temperature == 0, self.temperature, self.top_k)


@dataclasses.dataclass(frozen=True)
class Completion:
  text: str
  finish_reason: str        # 'stop' (EOS or a stop sequence) or 'length'
  tokens: tuple             # the completion's token strings (SentencePiece pieces, '▁' as ' ')
  token_logprobs: tuple     # log p(token | prefix) under the model (unscaled by temperature)
  prompt_tokens: int


@dataclasses.dataclass(frozen=True)
class Model:
  config: T5Config
  params: object            # the params tree, on the mesh
  vocab_path: str
  source: str               # what was loaded, for /v1/models and logs


class Tokenizer:
  """SentencePiece with T5's conventions: EOS appended to inputs, '</s>' in text is the EOS id,
  ids beyond the SentencePiece model (T5's extra ids) decode as unknown, as seqio does."""

  def __init__(self, vocab_path: str):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    from etils import epath  # pylint: disable=g-import-not-at-top
    try:
      proto = epath.Path(vocab_path).read_bytes()
    except FileNotFoundError as e:
      raise InferenceError(f'vocabulary {vocab_path}: file not found') from e
    self.sp = spm.SentencePieceProcessor(model_proto=proto)
    self.size = self.sp.get_piece_size()
    self.unk_id = self.sp.unk_id()

  def encode(self, text: str) -> list:
    ids = []
    for i, part in enumerate(text.split(EOS_JOIN)):
      if i:
        ids.append(EOS_ID)
      ids.extend(self.sp.encode(part))
    return ids + [EOS_ID]

  def _known(self, ids):
    return [i if i < self.size else self.unk_id for i in ids]

  def decode(self, ids) -> str:
    return self.sp.decode(self._known(list(ids)))

  def pieces(self, ids) -> list:
    """Each token's share of the decoded text (the pieces join to decode(ids))."""
    ids, out, previous = self._known(list(ids)), [], ''
    for k in range(1, len(ids) + 1):
      text = self.sp.decode(ids[:k])
      out.append(text[len(previous):] if text.startswith(previous)
                 else self.sp.id_to_piece(ids[k - 1]).replace('\u2581', ' '))
      previous = text
    return out


# ---------------------------------------------------------------------------------------------
# Loading


def is_run_dir(path: str) -> bool:
  """A trainer MODEL_DIR: it holds `checkpoints/` or `best/` (orbax step folders)."""
  return any(paths.path(path, sub).is_dir() for sub in ('checkpoints', 'best'))


def load_model(checkpoint: str, vocab: Optional[str] = None, which: str = 'latest',
               mesh=None, rules=None) -> Model:
  """Loads a trainer MODEL_DIR, or a T5X / Hugging Face checkpoint (which then needs `vocab`).

  Args:
    checkpoint: a trainer MODEL_DIR, or anything dssb.checkpoints.load reads.
    vocab: SentencePiece model; overrides the one recorded in a trainer checkpoint.
    which: 'latest' or 'best' (trainer MODEL_DIR only).
    mesh: where to place the params (default: dssb.sharding.make_mesh(), all devices on 'data').
    rules: logical axis rules (default: dssb.sharding.logical_axis_rules()).

  Returns:
    The Model, params sharded on the mesh.
  """
  mesh = mesh or sharding.make_mesh()
  rules = rules or sharding.logical_axis_rules()
  run = is_run_dir(checkpoint)
  if not run and not vocab:
    raise InferenceError(f'{checkpoint}: a T5X or Hugging Face checkpoint needs a vocabulary '
                         '(--vocab PATH.model); only trainer checkpoints record theirs')
  path = str(paths.path(checkpoint, 'best')) if run and which == 'best' else checkpoint
  try:
    config, params, meta = run_checkpoints.load_frozen(path, mesh, rules)
  except ValueError as e:  # e.g. no finished checkpoint step yet
    raise InferenceError(str(e)) from e
  source = f'{checkpoint} ({which} step {meta.get("step")})' if run else checkpoint
  vocab = vocab or meta.get('vocab_path')
  if not vocab:
    raise InferenceError(f'{source}: the checkpoint meta records no vocab_path (a run from '
                         'before vocabularies were recorded); pass the vocabulary (--vocab)')
  return Model(config, params, vocab, source)


# ---------------------------------------------------------------------------------------------
# Decoding


def bucket(n: int, minimum: int = MIN_BUCKET) -> int:
  """The smallest power of two >= n (and >= minimum)."""
  return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def _cut_at_stop(text: str, stop: Sequence[str]):
  cuts = [text.find(s) for s in stop if s and s in text]
  return (text[:min(cuts)], True) if cuts else (text, False)


class Engine:
  """Decodes lists of Requests in bucketed batches; thread-compatible (one caller at a time)."""

  def __init__(self, model: Model, max_batch: int = 32, max_input_tokens: int = 2048,
               max_tokens_limit: int = 512, mesh=None, rules=None):
    self.model = model
    self.tokenizer = Tokenizer(model.vocab_path)
    self.max_batch = max_batch
    self.max_input_tokens = max_input_tokens
    self.max_tokens_limit = max_tokens_limit
    self.mesh = mesh or sharding.make_mesh()
    self.rules = rules or sharding.logical_axis_rules()
    self.shapes_compiled = set()

  def encode(self, prompt: str) -> list:
    """Prompt ids with EOS; raises InferenceError when longer than the server accepts."""
    ids = self.tokenizer.encode(prompt)
    if len(ids) > self.max_input_tokens:
      raise InferenceError(f'the prompt is {len(ids)} tokens; this server takes at most '
                           f'{self.max_input_tokens} (--max_input_tokens)')
    return ids

  def check(self, request: Request) -> None:
    """Raises InferenceError for a request this engine cannot decode."""
    if not 1 <= request.max_tokens <= self.max_tokens_limit:
      raise InferenceError(f'max_tokens must be in [1, {self.max_tokens_limit}], got '
                           f'{request.max_tokens}')
    if request.temperature < 0:
      raise InferenceError(f'temperature must be >= 0, got {request.temperature}')
    if request.top_k is not None and not 1 <= request.top_k <= self.model.config.vocab_size:
      raise InferenceError(f'top_k must be in [1, {self.model.config.vocab_size}], got '
                           f'{request.top_k}')

  def run(self, requests: Sequence[Request]) -> list:
    """Completions of requests that share one group (see Request.group), in order."""
    if len({r.group() for r in requests}) != 1:
      raise ValueError('Engine.run: requests of one call must share temperature and top_k')
    out = []
    for start in range(0, len(requests), self.max_batch):
      out.extend(self._run_batch(requests[start:start + self.max_batch]))
    return out

  def _run_batch(self, requests):
    ids = [self.encode(r.prompt) for r in requests]
    rows = bucket(len(requests), 1)
    length = bucket(max(map(len, ids)))
    steps = bucket(max(r.max_tokens for r in requests))
    tokens_BxL = np.zeros((rows, length), np.int32)
    seeds = np.zeros((rows,), np.uint32)
    for i in range(rows):  # padding rows repeat row 0, so they finish when it does
      j = i if i < len(requests) else 0
      tokens_BxL[i, :len(ids[j])] = ids[j]
      seeds[i] = requests[j].seed % (1 << 32)
    first = requests[0]
    greedy = first.temperature == 0
    self.shapes_compiled.add((rows, length, steps, greedy, first.top_k))
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      tokens_BxS, logp_BxS = generate(
          self.model.config, self.model.params, tokens_BxL, steps,
          method='greedy' if greedy else 'sample', temperature=first.temperature or 1.0,
          top_k=first.top_k, seed=seeds, return_log_probs=True)
    tokens_BxS, logp_BxS = np.asarray(tokens_BxS), np.asarray(logp_BxS)
    return [self._completion(r, tokens_BxS[i], logp_BxS[i], len(ids[i]))
            for i, r in enumerate(requests)]

  def _completion(self, request, tokens_S, logp_S, prompt_tokens):
    ids = tokens_S[:request.max_tokens].tolist()
    ended = EOS_ID in ids
    n = ids.index(EOS_ID) if ended else len(ids)
    text, stopped = _cut_at_stop(self.tokenizer.decode(ids[:n]), request.stop)
    pieces = self.tokenizer.pieces(ids[:n])
    if stopped:  # keep the tokens whose text lies before the stop sequence
      ends = np.cumsum([len(p) for p in pieces])
      n = int(np.searchsorted(ends, len(text), side='right'))
      pieces = pieces[:n]
    return Completion(text=text, finish_reason='stop' if ended or stopped else 'length',
                      tokens=tuple(pieces), token_logprobs=tuple(float(x) for x in logp_S[:n]),
                      prompt_tokens=prompt_tokens)
