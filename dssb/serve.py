"""An OpenAI-compatible completions server for any dssb checkpoint (a distilled student, or a
teacher for `python -m dssb.teacher annotate`).

  python -m dssb.serve --checkpoint MODEL_DIR            # a trainer run: latest checkpoint
  python -m dssb.serve --checkpoint HF_OR_T5X_DIR --vocab spm.model --port 8000

Endpoints: POST /v1/completions, POST /v1/chat/completions (T5 has no chat template: the
messages' contents are joined by blank lines), GET /v1/models, GET /health. Concurrent requests
are decoded together (dssb.batching). Sampling: temperature (0 = greedy), top_k, n, seed (per
choice: seed + index), stop, max_tokens, logprobs (the chosen tokens' log-probabilities; top
alternatives are not computed). Malformed or unsupported requests get a 4xx with an OpenAI-style
error body naming the field. Binds 127.0.0.1 unless --host says otherwise. With --api_key_env
NAME, requests must carry `Authorization: Bearer $NAME`. --request_log writes one JSON line per
answered request (times, status, sha256 of the request body).
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time
from typing import Literal, Optional, Union

import pydantic

from dssb import inference
from dssb import listen
from dssb.batching import BatchQueue

MAX_CHOICES = 64


class RequestError(Exception):
  """A 4xx answer: status, message, and the offending field."""

  def __init__(self, status: int, message: str, param: Optional[str] = None,
               kind: str = 'invalid_request_error'):
    super().__init__(message)
    self.status, self.message, self.param, self.kind = status, message, param, kind


class _Sampling(pydantic.BaseModel):
  model_config = pydantic.ConfigDict(extra='forbid')
  model: str
  temperature: float = pydantic.Field(1.0, ge=0.0, le=10.0)
  top_p: float = pydantic.Field(1.0, gt=0.0, le=1.0)
  top_k: Optional[int] = None  # vLLM's extension; -1 or None: off
  n: int = pydantic.Field(1, ge=1, le=MAX_CHOICES)
  seed: Optional[int] = None
  stop: Union[str, list[str], None] = None
  stream: bool = False
  user: Optional[str] = None
  presence_penalty: float = 0.0
  frequency_penalty: float = 0.0
  logit_bias: Optional[dict] = None


class CompletionRequest(_Sampling):
  prompt: Union[str, list[str]]
  max_tokens: Optional[int] = 16
  logprobs: Optional[int] = None
  echo: bool = False
  best_of: Optional[int] = None
  suffix: Optional[str] = None


class Message(pydantic.BaseModel):
  model_config = pydantic.ConfigDict(extra='forbid')
  role: Literal['system', 'user', 'assistant']
  content: str
  name: Optional[str] = None


class ChatRequest(_Sampling):
  messages: list[Message] = pydantic.Field(min_length=1)
  max_tokens: Optional[int] = None
  max_completion_tokens: Optional[int] = None
  logprobs: bool = False
  top_logprobs: Optional[int] = None


# The neutral value of each accepted-but-unimplemented field; anything else is refused.
_NEUTRAL = {'top_p': 1.0, 'presence_penalty': 0.0, 'frequency_penalty': 0.0, 'stream': False,
            'echo': False, 'suffix': None}


def _check_supported(req: _Sampling) -> None:
  for field, neutral in _NEUTRAL.items():
    if getattr(req, field, neutral) != neutral:
      raise RequestError(400, f'{field}={getattr(req, field)!r} is not supported by dssb.serve '
                         f'(only {neutral!r})', field)
  if req.logit_bias:
    raise RequestError(400, 'logit_bias is not supported by dssb.serve', 'logit_bias')
  best_of = getattr(req, 'best_of', None)
  if best_of not in (None, req.n):
    raise RequestError(400, 'best_of is not supported by dssb.serve (only best_of = n)',
                       'best_of')
  if isinstance(req, CompletionRequest) and req.logprobs not in (None, 0):
    raise RequestError(400, f'logprobs={req.logprobs}: dssb.serve returns the chosen tokens\' '
                       'log-probabilities only (logprobs=0), no top alternatives', 'logprobs')
  if isinstance(req, ChatRequest) and req.top_logprobs:
    raise RequestError(400, 'top_logprobs is not supported by dssb.serve (chosen tokens only)',
                       'top_logprobs')


def _validate(model_cls, body: bytes):
  try:
    data = json.loads(body)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RequestError(400, f'the request body is not valid JSON ({e})') from e
  if not isinstance(data, dict):
    raise RequestError(400, f'the request body must be a JSON object, got {type(data).__name__}')
  try:
    return model_cls.model_validate(data), data
  except pydantic.ValidationError as e:
    err = e.errors()[0]
    field = '.'.join(str(x) for x in err['loc'])
    what = 'unknown field' if err['type'] == 'extra_forbidden' else err['msg']
    raise RequestError(400, f'{field}: {what}' + (f' ({len(e.errors())} problems)'
                                                  if len(e.errors()) > 1 else ''),
                       field) from e


def _rows(req, prompts, max_tokens):
  """inference.Requests: n choices per prompt; choice i of a prompt is seeded seed + i."""
  seed = req.seed if req.seed is not None else secrets.randbits(31)
  stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
  top_k = None if req.top_k in (None, -1, 0) else req.top_k
  return [inference.Request(prompt=p, max_tokens=max_tokens, temperature=req.temperature,
                            top_k=top_k, seed=seed + i, stop=stop)
          for p in prompts for i in range(req.n)]


class _RequestLog:
  def __init__(self, path: Optional[str]):
    self._path, self._lock = path, threading.Lock()

  def write(self, record: dict):
    if self._path:
      with self._lock, open(self._path, 'a', encoding='utf-8') as f:
        f.write(json.dumps(record) + '\n')


def body_sha256(data) -> str:
  """sha256 of a request body's canonical JSON (sorted keys), the request log's identity."""
  canonical = json.dumps(data, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
  return hashlib.sha256(canonical.encode()).hexdigest()


def _usage(completions) -> dict:
  prompt = sum(c.prompt_tokens for c in completions)
  completion = sum(len(c.tokens) for c in completions)
  return {'prompt_tokens': prompt, 'completion_tokens': completion,
          'total_tokens': prompt + completion}


def completion_rows(req: CompletionRequest) -> list:
  prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
  if not prompts:
    raise RequestError(400, 'prompt: empty list', 'prompt')
  return _rows(req, prompts, req.max_tokens or 16)


def completion_body(req: CompletionRequest, completions, model_name: str) -> dict:
  """The /v1/completions answer; logprobs as OpenAI's legacy format (chosen tokens only)."""
  choices = []
  for i, c in enumerate(completions):
    logprobs = None
    if req.logprobs is not None:
      offsets = [sum(len(t) for t in c.tokens[:k]) for k in range(len(c.tokens))]
      logprobs = {'tokens': list(c.tokens), 'token_logprobs': list(c.token_logprobs),
                  'top_logprobs': None, 'text_offset': offsets}
    choices.append({'index': i, 'text': c.text, 'finish_reason': c.finish_reason,
                    'logprobs': logprobs})
  return {'id': 'cmpl-' + secrets.token_hex(12), 'object': 'text_completion',
          'created': int(time.time()), 'model': model_name, 'choices': choices,
          'usage': _usage(completions)}


def chat_rows(req: ChatRequest, max_tokens_limit: int) -> list:
  """T5 has no chat template: the prompt is the messages' contents joined by blank lines."""
  prompt = '\n\n'.join(m.content for m in req.messages)
  return _rows(req, [prompt], req.max_completion_tokens or req.max_tokens or max_tokens_limit)


def chat_body(req: ChatRequest, completions, model_name: str) -> dict:
  choices = []
  for i, c in enumerate(completions):
    logprobs = None
    if req.logprobs:
      logprobs = {'content': [{'token': t, 'logprob': lp, 'bytes': list(t.encode()),
                               'top_logprobs': []}
                              for t, lp in zip(c.tokens, c.token_logprobs)]}
    choices.append({'index': i, 'message': {'role': 'assistant', 'content': c.text},
                    'finish_reason': c.finish_reason, 'logprobs': logprobs})
  return {'id': 'chatcmpl-' + secrets.token_hex(12), 'object': 'chat.completion',
          'created': int(time.time()), 'model': model_name, 'choices': choices,
          'usage': _usage(completions)}


def create_app(engine: inference.Engine, model_name: str, *, max_batch: int = 32,
               batch_wait_s: float = 0.015, batch_max_wait_s: float = 0.1,
               request_log: Optional[str] = None,
               api_key: Optional[str] = None, max_request_bytes: int = 1 << 20):
  """The FastAPI app (decoding runs in one batching worker thread)."""
  import fastapi  # pylint: disable=g-import-not-at-top
  from fastapi import responses  # pylint: disable=g-import-not-at-top

  app = fastapi.FastAPI(title='dssb.serve', docs_url=None, redoc_url=None)
  batcher = BatchQueue(engine.run, max_batch, batch_wait_s, batch_max_wait_s)
  log = _RequestLog(request_log)
  app.state.batcher = batcher
  created = int(time.time())

  def error(status, message, param=None, kind='invalid_request_error'):
    return responses.JSONResponse(
        {'error': {'message': message, 'type': kind, 'param': param, 'code': None}}, status)

  @app.middleware('http')
  async def guard(request: fastapi.Request, call_next):
    if api_key is not None and request.url.path.startswith('/v1/'):
      given = request.headers.get('authorization', '')
      if not hmac.compare_digest(given.encode(), f'Bearer {api_key}'.encode()):
        return error(401, 'missing or wrong API key (Authorization: Bearer ...)', None,
                     'authentication_error')
    length = request.headers.get('content-length')
    if length is not None and (not length.isdigit() or int(length) > max_request_bytes):
      return error(413, f'request body over {max_request_bytes} bytes')
    return await call_next(request)

  async def read_body(request):
    chunks, size = [], 0
    async for chunk in request.stream():
      size += len(chunk)
      if size > max_request_bytes:
        raise RequestError(413, f'request body over {max_request_bytes} bytes')
      chunks.append(chunk)
    return b''.join(chunks)

  async def handle(request, model_cls, to_rows, to_body):
    received = time.time()
    record = {'received': received, 'path': request.url.path}
    try:
      req, data = _validate(model_cls, await read_body(request))
      record['body_sha256'] = body_sha256(data)
      if req.model != model_name:
        raise RequestError(404, f'model {req.model!r} is not served here; this server serves '
                           f'{model_name!r} (GET /v1/models)', 'model', 'not_found_error')
      _check_supported(req)
      rows = to_rows(req)
      for row in rows:
        engine.check(row)
        engine.encode(row.prompt)
      body = to_body(req, await batcher.submit(rows), model_name)
      status = 200
    except RequestError as e:
      body, status = None, e.status
      response = error(e.status, e.message, e.param, e.kind)
    except inference.InferenceError as e:
      body, status = None, 400
      response = error(400, str(e))
    except Exception as e:  # pylint: disable=broad-except  (a decode failure: answer, log, go on)
      body, status = None, 500
      response = error(500, f'internal error: {type(e).__name__}: {e}', None, 'server_error')
      print(f'dssb.serve: request failed: {type(e).__name__}: {e}', file=sys.stderr, flush=True)
    if body is not None:
      response = responses.JSONResponse(body)
      record.update(rows=len(rows), completion_tokens=body['usage']['completion_tokens'])
    record.update(status=status, done=time.time())
    log.write(record)
    return response

  @app.post('/v1/completions')
  async def completions(request: fastapi.Request):
    return await handle(request, CompletionRequest, completion_rows, completion_body)

  @app.post('/v1/chat/completions')
  async def chat_completions(request: fastapi.Request):
    return await handle(request, ChatRequest,
                        lambda req: chat_rows(req, engine.max_tokens_limit), chat_body)

  @app.get('/v1/models')
  async def models():
    return {'object': 'list', 'data': [{'id': model_name, 'object': 'model', 'created': created,
                                        'owned_by': 'dssb', 'root': engine.model.source}]}

  @app.get('/health')
  async def health():
    return {'status': 'ok', 'model': model_name, 'batches': batcher.batches,
            'rows': batcher.rows}

  @app.exception_handler(fastapi.exceptions.RequestValidationError)
  async def invalid(request, exc):  # pylint: disable=unused-argument
    return error(400, str(exc))

  @app.exception_handler(404)
  async def not_found(request, exc):  # pylint: disable=unused-argument
    return error(404, f'no route {request.method} {request.url.path}', None, 'not_found_error')

  @app.exception_handler(405)
  async def not_allowed(request, exc):  # pylint: disable=unused-argument
    return error(405, f'method {request.method} not allowed on {request.url.path}')

  return app


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m dssb.serve', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--checkpoint', required=True,
                      help='trainer MODEL_DIR, or a T5X / Hugging Face checkpoint (with --vocab)')
  parser.add_argument('--vocab', help='SentencePiece model (default: the trainer checkpoint\'s)')
  parser.add_argument('--which', choices=('latest', 'best'), default='latest',
                      help='trainer MODEL_DIR: the latest or the best-on-validation checkpoint')
  parser.add_argument('--model_name', help='name clients ask for (default: folder name)')
  parser.add_argument('--host', default='127.0.0.1')
  parser.add_argument('--port', type=int, default=8000, help='0: any free port (printed)')
  parser.add_argument('--max_batch', type=int, default=32, help='rows per decode')
  parser.add_argument('--batch_wait_ms', type=float, default=15.0,
                      help='a batch takes requests until none arrives for this long ...')
  parser.add_argument('--batch_max_wait_ms', type=float, default=100.0,
                      help='... or until its first request has waited this long (see batching)')
  parser.add_argument('--max_input_tokens', type=int, default=2048)
  parser.add_argument('--max_tokens_limit', type=int, default=512,
                      help='largest max_tokens a request may ask for')
  parser.add_argument('--max_request_bytes', type=int, default=1 << 20)
  parser.add_argument('--request_log', help='append one JSON line per answered request here')
  parser.add_argument('--api_key_env', help='require the key held by this environment variable')
  args = parser.parse_args(argv)

  api_key = None
  if args.api_key_env:
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
      parser.error(f'--api_key_env {args.api_key_env}: that environment variable is not set')
  import uvicorn  # pylint: disable=g-import-not-at-top
  try:
    model = inference.load_model(args.checkpoint, args.vocab, args.which)
  except (inference.InferenceError, ValueError) as e:
    raise SystemExit(f'dssb.serve: {e}') from e
  engine = inference.Engine(model, args.max_batch, args.max_input_tokens, args.max_tokens_limit)
  name = args.model_name or os.path.basename(os.path.normpath(args.checkpoint))
  app = create_app(engine, name, max_batch=args.max_batch,
                   batch_wait_s=args.batch_wait_ms / 1000,
                   batch_max_wait_s=args.batch_max_wait_ms / 1000, request_log=args.request_log,
                   api_key=api_key, max_request_bytes=args.max_request_bytes)
  sock = listen.listening_socket(args.host, args.port, backlog=2048)
  host, port = sock.getsockname()[:2]
  print(f'dssb.serve: {name} ({model.source}) on http://{host}:{port}/v1', flush=True)
  config = uvicorn.Config(app, log_level='warning', access_log=False, timeout_keep_alive=30)
  server = uvicorn.Server(config)
  try:
    asyncio.run(server.serve(sockets=[sock]))
  finally:
    app.state.batcher.close()


if __name__ == '__main__':
  sys.exit(main())
