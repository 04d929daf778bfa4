"""dssb.serve as a real process on 127.0.0.1: the OpenAI client against it, batching of concurrent
requests, per-choice seeds, log-probabilities, and clear 4xx answers to malformed requests."""

import asyncio
import http.client
import json

import openai
import pytest

from dssb import inference
from dssb import serve


def _client(server, key=None, retries=0):
  return openai.AsyncOpenAI(base_url=server.url, api_key=key or server.api_key,
                            max_retries=retries, timeout=60)


def _raw(server, method, path, body=None, headers=None, key=True):
  conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=60)
  headers = dict(headers or {})
  if key:
    headers['Authorization'] = f'Bearer {server.api_key}'
  if isinstance(body, (dict, list)):
    body = json.dumps(body)
    headers['Content-Type'] = 'application/json'
  conn.request(method, path, body=body, headers=headers)
  response = conn.getresponse()
  data = response.read()
  conn.close()
  return response.status, json.loads(data) if data else None


def test_completions_through_the_openai_client(tiny_server):
  async def run():
    client = _client(tiny_server)
    models = await client.models.list()
    assert [m.id for m in models.data] == ['tiny']
    r = await client.completions.create(model='tiny', prompt='Luke scored 84 points.',
                                        max_tokens=12, temperature=0.8, seed=5, n=3, logprobs=0)
    again = await client.completions.create(model='tiny', prompt='Luke scored 84 points.',
                                            max_tokens=12, temperature=0.8, seed=5, n=3)
    greedy = await client.completions.create(model='tiny', prompt='Luke scored 84 points.',
                                             max_tokens=12, temperature=0)
    chat = await client.chat.completions.create(
        model='tiny', messages=[{'role': 'user', 'content': 'Luke scored 84 points.'}],
        max_tokens=12, temperature=0, logprobs=True)
    await client.close()
    return r, again, greedy, chat

  r, again, greedy, chat = asyncio.run(run())
  assert len(r.choices) == 3 and [c.index for c in r.choices] == [0, 1, 2]
  # a seed gives the same text; choice i is seeded seed + i, so choices differ
  assert [c.text for c in r.choices] == [c.text for c in again.choices]
  assert len({c.text for c in r.choices}) > 1
  for c in r.choices:
    lp = c.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) <= 12
    assert all(x <= 0 for x in lp.token_logprobs)
    assert ''.join(lp.tokens) == c.text  # tokens spell the text (SentencePiece pieces)
    assert c.finish_reason in ('stop', 'length')
  assert r.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in r.choices)
  # chat: the message contents are the prompt, so greedy chat == greedy completion
  assert chat.choices[0].message.content == greedy.choices[0].text
  assert len(chat.choices[0].logprobs.content) == len(
      _tokens_of(greedy.choices[0].text, chat.choices[0].logprobs.content))


def _tokens_of(text, content):
  assert ''.join(t.token for t in content) == text
  return content


def test_stop_sequences_cut_the_text(tiny_server):
  async def run():
    client = _client(tiny_server)
    full = await client.completions.create(model='tiny', prompt='Faye had 31 packs.',
                                           max_tokens=30, temperature=0, logprobs=0)
    text = full.choices[0].text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    cut = await client.completions.create(model='tiny', prompt='Faye had 31 packs.',
                                          max_tokens=30, temperature=0, stop=[stop], logprobs=0)
    await client.close()
    return text, stop, cut.choices[0]

  text, stop, cut = asyncio.run(run())
  assert len(text) >= 6, text
  assert cut.text == text[:text.index(stop)] and cut.finish_reason == 'stop'
  assert len(''.join(cut.logprobs.tokens)) <= len(cut.text) + 1


def test_concurrent_requests_share_a_decode(tiny_server):
  """16 requests in flight at once are decoded in fewer batches than requests, and each row's
  sample is what it would be alone (per-row seeds)."""
  prompts = [f'Jack had {i} emails.' for i in range(16)]

  async def run():
    client = _client(tiny_server)
    before = tiny_server.health()
    together = await asyncio.gather(*[
        client.completions.create(model='tiny', prompt=p, max_tokens=8, temperature=1.0,
                                  seed=100 + i) for i, p in enumerate(prompts)])
    after = tiny_server.health()
    alone = [await client.completions.create(model='tiny', prompt=prompts[i], max_tokens=8,
                                             temperature=1.0, seed=100 + i) for i in (0, 7)]
    await client.close()
    return before, after, together, alone

  before, after, together, alone = asyncio.run(run())
  assert after['rows'] - before['rows'] == 16
  assert after['batches'] - before['batches'] <= 8, (before, after)
  assert [a.choices[0].text for a in alone] == [together[i].choices[0].text for i in (0, 7)]


@pytest.mark.parametrize('body,status,needle', [
    ('not json', 400, 'not valid JSON'),
    ([1, 2], 400, 'JSON object'),
    ({'model': 'tiny'}, 400, 'prompt'),
    ({'model': 'tiny', 'prompt': 'x', 'temprature': 0.5}, 400, 'temprature: unknown field'),
    ({'model': 'tiny', 'prompt': 'x', 'max_tokens': 'many'}, 400, 'max_tokens'),
    ({'model': 'tiny', 'prompt': 'x', 'max_tokens': 100000}, 400, 'max_tokens must be in'),
    ({'model': 'tiny', 'prompt': 'x', 'temperature': -1}, 400, 'temperature'),
    ({'model': 'tiny', 'prompt': 'x', 'top_p': 0.5}, 400, 'top_p=0.5 is not supported'),
    ({'model': 'tiny', 'prompt': 'x', 'stream': True}, 400, 'stream=True is not supported'),
    ({'model': 'tiny', 'prompt': 'x', 'logprobs': 5}, 400, 'top alternatives'),
    ({'model': 'tiny', 'prompt': 'x', 'n': 1000}, 400, 'n:'),
    ({'model': 'tiny', 'prompt': []}, 400, 'empty list'),
    ({'model': 'gpt-4', 'prompt': 'x'}, 404, "model 'gpt-4' is not served here"),
    ({'model': 'tiny', 'prompt': 'word ' * 3000}, 400, 'takes at most 2048'),
    ({'model': 'tiny', 'prompt': 'word ' * 50000}, 413, 'over 200000 bytes'),
])
def test_malformed_requests_get_openai_style_4xx(tiny_server, body, status, needle):
  got, data = _raw(tiny_server, 'POST', '/v1/completions', body)
  assert got == status, data
  assert needle in data['error']['message'], data
  assert set(data['error']) == {'message', 'type', 'param', 'code'}


def test_auth_routes_and_prompt_limits(tiny_server):
  status, data = _raw(tiny_server, 'POST', '/v1/completions', {'model': 'tiny', 'prompt': 'x'},
                      key=False)
  assert status == 401 and data['error']['type'] == 'authentication_error'
  status, data = _raw(tiny_server, 'POST', '/v1/completions', {'model': 'tiny', 'prompt': 'x'},
                      headers={'Authorization': 'Bearer wrong'}, key=False)
  assert status == 401
  status, data = _raw(tiny_server, 'GET', '/v1/nothing')
  assert status == 404 and 'no route' in data['error']['message']
  status, data = _raw(tiny_server, 'GET', '/health', key=False)  # health needs no key
  assert status == 200 and data['status'] == 'ok'
  status, data = _raw(tiny_server, 'POST', '/v1/chat/completions',
                      {'model': 'tiny', 'messages': [{'role': 'robot', 'content': 'x'}]})
  assert status == 400 and 'messages.0.role' in data['error']['message']
  # the request log has a line per answer, with the request's identity and no key
  log = tiny_server.log()
  assert log and all({'received', 'done', 'status', 'path'} <= set(r) for r in log)
  with open(tiny_server.request_log) as f:
    assert tiny_server.api_key not in f.read()


def test_body_sha256_is_the_canonical_json():
  a = serve.body_sha256({'b': 1, 'a': [1.5, 'x']})
  assert a == serve.body_sha256(json.loads('{"a": [1.5, "x"], "b": 1}'))
  assert a != serve.body_sha256({'b': 1, 'a': [1.5, 'y']})


def test_buckets():
  assert [inference.bucket(n) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
  assert [inference.bucket(n, 1) for n in (1, 2, 3, 5, 16)] == [1, 2, 4, 8, 16]


def test_load_errors_name_the_problem(tmp_path, tiny_checkpoint):
  with pytest.raises(inference.InferenceError, match='needs a vocabulary'):
    inference.load_model(tiny_checkpoint)
  with pytest.raises(Exception, match='no such file'):
    inference.load_model(str(tmp_path / 'missing'), vocab='x.model')
