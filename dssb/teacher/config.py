"""A teacher's configuration: a gin file (gin/teachers/*.gin) checked into a frozen dataclass.

    from __gin__ import dynamic_registration
    from dssb.teacher import config
    config.TeacherConfig:
      name = 'llama70b'
      base_url = '${OPENAI_BASE_URL}'       # ${VAR} and ${VAR:-default} read the environment
      model = '${DSSB_TEACHER_MODEL}'
      api_key_env = 'OPENAI_API_KEY'        # the NAME of the variable that holds the key

The API key itself never appears in a config, a log, the cache or an output: the config names
the environment variable, and the backend reads it when it connects. A field that is unknown,
missing or of the wrong kind raises ConfigError naming the file and the field.
"""

import dataclasses
import logging
import os
import re
import typing
from typing import Optional, Sequence

import gin

from dssb.data import sources

BACKENDS = ('openai', 'dssb')
ENDPOINTS = ('completions', 'chat')
GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'gin')
_ENV = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}')


class ConfigError(ValueError):
  """A teacher config that cannot be used; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
  """One teacher: who answers, with which prompt, sampled how.

  Attributes:
    name: the teacher's name; outputs go to datasets/{dataset}/llm_{name}/.
    backend: 'openai' (any OpenAI-compatible server: vLLM, llama.cpp, TGI, SGLang, dssb.serve)
      or 'dssb' (a dssb checkpoint decoded in this process).
    base_url: the server's API root, e.g. http://127.0.0.1:8000/v1 (openai).
    model: the model name the server knows (openai).
    api_key_env: environment variable holding the API key ('' for none) (openai).
    endpoint: 'completions' (/v1/completions, the prompt as text) or 'chat'
      (/v1/chat/completions, exemplars as user/assistant turns) (openai).
    timeout_s: per-request timeout (openai).
    max_retries: retries per request after timeouts, dropped connections, 5xx and malformed
      answers, with exponential backoff (openai).
    concurrency: requests in flight at once (both backends).
    checkpoint: a trainer MODEL_DIR, T5X or Hugging Face checkpoint (dssb).
    vocab: SentencePiece model; default the one a trainer checkpoint records (dssb).
    max_batch: rows per decode (dssb).
    prompt: prompt version ('v1' -> dssb/teacher/prompts/{dataset}_v1.json) or a path.
    n: samples per input (self-consistency: their parsed labels are majority-voted).
    temperature: sampling temperature (0 = greedy).
    top_p: nucleus sampling (None: not sent).
    top_k: top-k sampling (None: not sent; vLLM and dssb.serve accept it).
    max_tokens: tokens per completion.
    stop: stop sequences; None takes the prompt's.
    logprobs: ask for the chosen tokens' log-probabilities.
    seed: sample i of an input is requested with seed + i.
  """
  name: str
  backend: str = 'openai'
  base_url: str = 'http://127.0.0.1:8000/v1'
  model: str = ''
  api_key_env: str = 'OPENAI_API_KEY'
  endpoint: str = 'completions'
  timeout_s: float = 300.0
  max_retries: int = 6
  concurrency: int = 16
  checkpoint: str = ''
  vocab: str = ''
  max_batch: int = 32
  prompt: str = 'v1'
  n: int = 1
  temperature: float = 0.0
  top_p: Optional[float] = None
  top_k: Optional[int] = None
  max_tokens: int = 256
  stop: Optional[tuple] = None
  logprobs: bool = False
  seed: int = 0

  def __post_init__(self):
    if isinstance(self.stop, list):  # gin gives lists; a bare string is refused by _check
      object.__setattr__(self, 'stop', tuple(self.stop))

  def sampling(self, stop: Sequence[str]) -> dict:
    """The sampling parameters of a request (part of the cache key), without the seed."""
    params = {'max_tokens': self.max_tokens, 'temperature': self.temperature,
              'stop': list(self.stop if self.stop is not None else stop)}
    for key in ('top_p', 'top_k'):
      if getattr(self, key) is not None:
        params[key] = getattr(self, key)
    if not params['stop']:
      del params['stop']
    return params


def _expand(value: str, field: str, path: str) -> str:
  def sub(m):
    name, default = m.group(1), m.group(2)
    if name in os.environ:
      return os.environ[name]
    if default is not None:
      return default
    raise ConfigError(f'{path}: field {field!r} reads ${{{name}}}, which is not set in the '
                      'environment (write ${' + name + ':-DEFAULT} for a default)')
  return _ENV.sub(sub, value)


def _type_ok(value, kind) -> bool:
  if typing.get_origin(kind) is typing.Union:
    return any(value is None if k is type(None) else _type_ok(value, k)
               for k in typing.get_args(kind))
  if kind is tuple:
    return isinstance(value, (tuple, list)) and all(isinstance(s, str) for s in value)
  if kind is float:
    kind = (int, float)
  return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _type_name(kind) -> str:
  if typing.get_origin(kind) is typing.Union:
    return ' or '.join(_type_name(k) for k in typing.get_args(kind))
  return {type(None): 'None', tuple: 'a list of strings'}.get(kind, kind.__name__)


def _check(cfg: TeacherConfig, path: str) -> TeacherConfig:
  """Types, ranges and choices of every field; errors name the file and the field."""
  values = {}
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    if isinstance(value, str):
      value = _expand(value, f.name, path)
    if not _type_ok(value, f.type):
      raise ConfigError(f'{path}: field {f.name!r} is {value!r} ({type(value).__name__}), '
                        f'expected {_type_name(f.type)}')
    values[f.name] = value
  cfg = TeacherConfig(**values)
  problems = {
      'name': (sources.check_teacher, None),
      'backend': (lambda v: v in BACKENDS, f'one of {BACKENDS}'),
      'endpoint': (lambda v: v in ENDPOINTS, f'one of {ENDPOINTS}'),
      'concurrency': (lambda v: v >= 1, '>= 1'),
      'max_retries': (lambda v: v >= 0, '>= 0'),
      'timeout_s': (lambda v: v > 0, '> 0'),
      'n': (lambda v: v >= 1, '>= 1'),
      'temperature': (lambda v: v >= 0, '>= 0'),
      'max_tokens': (lambda v: v >= 1, '>= 1'),
      'max_batch': (lambda v: v >= 1, '>= 1'),
      'top_p': (lambda v: v is None or 0 < v <= 1, 'in (0, 1]'),
      'top_k': (lambda v: v is None or v >= 1, '>= 1'),
  }
  for field, (test, expected) in problems.items():
    value = getattr(cfg, field)
    try:
      ok = test(value) is not False
    except ValueError as e:
      raise ConfigError(f'{path}: field {field!r}: {e}') from e
    if not ok:
      raise ConfigError(f'{path}: field {field!r} is {value!r}, expected {expected}')
  if cfg.backend == 'openai' and not cfg.model:
    raise ConfigError(f'{path}: field \'model\' is empty; the openai backend needs the name the '
                      'server serves (GET {base_url}/models lists them)')
  if cfg.backend == 'dssb' and not cfg.checkpoint:
    raise ConfigError(f'{path}: field \'checkpoint\' is empty; the dssb backend needs a '
                      'checkpoint')
  return cfg


def resolve(spec: str) -> str:
  """A path, or a name under gin/teachers/ ('openai_compatible' -> gin/teachers/...gin)."""
  if os.path.exists(spec):
    return spec
  candidate = os.path.join(GIN_DIR, 'teachers', spec if spec.endswith('.gin') else spec + '.gin')
  if os.path.exists(candidate):
    return candidate
  raise ConfigError(f'{spec}: no such teacher config (a gin file, or one of '
                    f'{sorted(os.listdir(os.path.join(GIN_DIR, "teachers")))} in '
                    f'{os.path.join(GIN_DIR, "teachers")})')


def load(spec: str, bindings: Sequence[str] = ()) -> TeacherConfig:
  """Parses a teacher gin file (plus KEY=VALUE bindings) into a checked TeacherConfig."""
  path = resolve(spec)
  gin.clear_config()
  gin.add_config_file_search_path(GIN_DIR)
  logging.disable(logging.ERROR)  # gin logs each include search path it tries and misses
  try:
    gin.parse_config_files_and_bindings([path], list(bindings), finalize_config=False)
    cfg = gin.get_configurable(TeacherConfig)()
  except TypeError as e:
    missing = re.search(r"missing \d+ required positional argument: '(\w+)'", str(e))
    if missing:
      raise ConfigError(f'{path}: field {missing.group(1)!r} is required') from e
    raise ConfigError(f'{path}: {e}') from e
  except (ValueError, KeyError, SyntaxError, NameError) as e:
    message = str(e)
    if re.search(r'\bapi_key\b', message):  # gin quotes the line: it may hold a key
      message = ("TeacherConfig has no field 'api_key'. Never write an API key in a config: set "
                 'api_key_env to the name of the environment variable that holds it')
    raise ConfigError(f'{path}: {message}') from e
  finally:
    logging.disable(logging.NOTSET)
    gin.clear_config()
  return _check(cfg, path)
