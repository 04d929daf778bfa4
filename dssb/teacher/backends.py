"""Teacher backends behind one small interface: request(prompt, input, seed) -> body, then
complete(body) -> Sample.

  OpenAIBackend  any OpenAI-compatible server (vLLM, llama.cpp, TGI, SGLang, dssb.serve) through
                 the `openai` async client, /v1/completions or /v1/chat/completions. The client
                 retries timeouts, dropped connections, 408/409/429 and 5xx with exponential
                 backoff; this module also retries answers that arrive but are malformed
                 (garbage bodies, missing choices), and stops on any other 4xx.
  DssbBackend    a dssb checkpoint in this process (dssb.inference), concurrent requests
                 batched into one decode as dssb.serve does.

The request body is the cache's record of what was asked; the API key stays in the client.
"""

import asyncio
import dataclasses
import inspect
import json
import os
import random
import sys
from typing import Optional

from dssb.teacher import prompts as prompts_lib
from dssb.teacher.config import TeacherConfig


class TeacherRequestError(RuntimeError):
  """The teacher refused a request (4xx) or kept failing after the retries: stop the run."""


class MalformedResponse(ValueError):
  """An answer that is not a usable completion; the message says what is wrong with it."""


@dataclasses.dataclass(frozen=True)
class Sample:
  text: str
  finish_reason: str
  token_logprobs: Optional[list] = None
  completion_tokens: Optional[int] = None

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def _backoff(attempt: int) -> float:
  return min(0.5 * 2 ** attempt, 8.0) * (1 - 0.25 * random.random())


def _choice(response, chat: bool):
  """The single choice of a parsed response, checked; MalformedResponse otherwise."""
  if isinstance(response, (str, bytes)):
    raise MalformedResponse(f'the body is not JSON: {str(response)[:80]!r}')
  choices = getattr(response, 'choices', None)
  if not isinstance(choices, list) or len(choices) != 1:
    raise MalformedResponse(f'expected "choices" with one element, got {choices!r:.80}')
  choice = choices[0]
  text = getattr(getattr(choice, 'message', None), 'content', None) if chat else getattr(
      choice, 'text', None)
  if not isinstance(text, str):
    where = 'choices[0].message.content' if chat else 'choices[0].text'
    raise MalformedResponse(f'{where} is {type(text).__name__}, expected a string')
  return choice, text


def _logprobs(choice, chat: bool) -> Optional[list]:
  lp = getattr(choice, 'logprobs', None)
  if lp is None:
    return None
  if chat:
    content = getattr(lp, 'content', None) or []
    return [float(getattr(t, 'logprob', 0.0)) for t in content]
  values = getattr(lp, 'token_logprobs', None)
  return None if values is None else [float(v) if v is not None else None for v in values]


class OpenAIBackend:
  """An OpenAI-compatible server, through openai.AsyncOpenAI."""

  def __init__(self, config: TeacherConfig):
    import openai  # pylint: disable=g-import-not-at-top
    self._openai = openai
    self.config = config
    self.chat = config.endpoint == 'chat'
    self.identity = f'openai:{config.model}:{config.endpoint}'
    key = os.environ.get(config.api_key_env, '') if config.api_key_env else ''
    self.client = openai.AsyncOpenAI(
        base_url=config.base_url, api_key=key or 'no-key', max_retries=config.max_retries,
        timeout=openai.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s)))
    create = self.client.chat.completions.create if self.chat else self.client.completions.create
    self._create = create
    self._known = set(inspect.signature(create).parameters)

  def describe(self) -> str:
    return f'{self.config.base_url} model {self.config.model!r} ({self.config.endpoint})'

  def request(self, prompt: prompts_lib.Prompt, text: str, sampling: dict, seed: int) -> dict:
    body = {'model': self.config.model, **sampling, 'seed': seed}
    if self.chat:
      body['messages'] = prompts_lib.render_chat(prompt, text)
      if self.config.logprobs:
        body['logprobs'] = True
    else:
      body['prompt'] = prompts_lib.render(prompt, text)
      if self.config.logprobs:
        body['logprobs'] = 0
    return body

  async def complete(self, body: dict) -> Sample:
    known = {k: v for k, v in body.items() if k in self._known}
    extra = {k: v for k, v in body.items() if k not in self._known}
    errors = (self._openai.APIConnectionError, self._openai.InternalServerError,
              self._openai.RateLimitError)
    for attempt in range(self.config.max_retries + 1):
      try:
        response = await self._create(**known, extra_body=extra or None)
        choice, text = _choice(response, self.chat)
        usage = getattr(response, 'usage', None)
        return Sample(text=text, finish_reason=str(getattr(choice, 'finish_reason', '')),
                      token_logprobs=_logprobs(choice, self.chat),
                      completion_tokens=getattr(usage, 'completion_tokens', None))
      except self._openai.APIStatusError as e:
        if isinstance(e, errors):  # the client already retried these
          raise TeacherRequestError(f'{self.describe()}: gave up after {self.config.max_retries}'
                                    f' retries: HTTP {e.status_code}: {_message(e)}') from e
        raise TeacherRequestError(f'{self.describe()} refused a request: HTTP {e.status_code}: '
                                  f'{_message(e)}') from e
      except errors as e:
        raise TeacherRequestError(f'{self.describe()}: gave up after {self.config.max_retries} '
                                  f'retries: {type(e).__name__}: {e}') from e
      except (MalformedResponse, json.JSONDecodeError, UnicodeDecodeError,
              self._openai.APIResponseValidationError) as e:
        problem = e
        if attempt < self.config.max_retries:
          await asyncio.sleep(_backoff(attempt))
    raise TeacherRequestError(f'{self.describe()}: malformed response {self.config.max_retries + 1}'
                              f' times; last: {type(problem).__name__}: {problem}')

  async def aclose(self):
    await self.client.close()


def _message(error) -> str:
  body = getattr(error, 'body', None)
  if isinstance(body, dict):
    inner = body.get('error', body)
    if isinstance(inner, dict) and 'message' in inner:
      return str(inner['message'])
  return str(getattr(error, 'message', error))


class DssbBackend:
  """A dssb checkpoint decoded in this process; concurrent requests share one decode."""

  def __init__(self, config: TeacherConfig):
    from dssb import inference  # pylint: disable=g-import-not-at-top
    from dssb.batching import BatchQueue  # pylint: disable=g-import-not-at-top
    self._inference = inference
    self.config = config
    model = inference.load_model(config.checkpoint, config.vocab or None)
    self.engine = inference.Engine(model, max_batch=config.max_batch,
                                   max_tokens_limit=max(512, config.max_tokens))
    self.batcher = BatchQueue(self.engine.run, config.max_batch)
    self.identity = f'dssb:{model.source}'
    print(f'teacher {config.name}: {model.source} in process', file=sys.stderr)

  def describe(self) -> str:
    return f'dssb checkpoint {self.config.checkpoint}'

  def request(self, prompt: prompts_lib.Prompt, text: str, sampling: dict, seed: int) -> dict:
    if self.config.top_p is not None:
      raise TeacherRequestError('the dssb backend does not implement top_p; set it to None')
    return {'prompt': prompts_lib.render(prompt, text), **sampling, 'seed': seed}

  async def complete(self, body: dict) -> Sample:
    row = self._inference.Request(
        prompt=body['prompt'], max_tokens=body['max_tokens'], temperature=body['temperature'],
        top_k=body.get('top_k'), seed=body['seed'], stop=tuple(body.get('stop', ())))
    try:
      self.engine.check(row)
      (completion,) = await self.batcher.submit([row])
    except self._inference.InferenceError as e:
      raise TeacherRequestError(f'{self.describe()}: {e}') from e
    return Sample(text=completion.text, finish_reason=completion.finish_reason,
                  token_logprobs=list(completion.token_logprobs) if self.config.logprobs
                  else None, completion_tokens=len(completion.tokens))

  async def aclose(self):
    self.batcher.close()


def create(config: TeacherConfig):
  """The backend a config names."""
  return OpenAIBackend(config) if config.backend == 'openai' else DssbBackend(config)
