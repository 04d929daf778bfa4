"""A Google Cloud Storage stand-in on 127.0.0.1 that TensorFlow, tensorstore and orbax all reach.

Why each piece (test support; what it found is recorded in the closing note of issue 8):
- gcp-storage-emulator serves the GCS JSON API in memory. Four of its gaps are patched here:
  media downloads lack `x-goog-generation` (tensorstore's OCDBT, which orbax writes, then fails
  with "Malformed StorageGeneration"), a 0-byte media upload (TF's folder markers) crashes its
  handler, `ifGenerationMatch` preconditions are ignored, and `Expect: 100-continue` is never
  answered (every curl upload over 1 MiB stalls for a second).
- TensorFlow's GCS file system (used by epath, clu's TensorBoard writer and orbax's metadata)
  hard-codes https://www.googleapis.com and has no endpoint setting, but its libcurl honours
  HTTPS_PROXY and CURL_CA_BUNDLE. So a proxy answers CONNECT for the Google hosts with a
  certificate of a throw-away CA and forwards each request to the emulator in plain HTTP.
- tensorstore takes TENSORSTORE_GCS_HTTP_URL; google-cloud-storage (orbax's bucket check)
  takes STORAGE_EMULATOR_HOST; GOOGLE_AUTH_TOKEN_FOR_TESTING keeps every client off credential
  files and the metadata server.
Nothing leaves 127.0.0.1. `FakeGcs(...).env` is what a client process needs.
"""

import functools
import http.client
import json
import logging
import os
import socket
import socketserver
import ssl
import subprocess
import threading
import urllib.parse
import urllib.request
from http import HTTPStatus

GOOGLE_HOSTS = ('www.googleapis.com', 'storage.googleapis.com')
_HOP_HEADERS = {'connection', 'proxy-connection', 'keep-alive', 'transfer-encoding', 'te',
                'trailer', 'upgrade', 'expect', 'proxy-authorization'}


# ---------------------------------------------------------------------------------------------
# The emulator and its patches


def _query(request, name):
  value = request.query.get(name)
  return value[0] if value else None


def _generation(storage, bucket, name):
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=g-import-not-at-top
  try:
    return int(storage.get_file_obj(bucket, name)['generation'])
  except (NotFound, KeyError, TypeError, ValueError):
    return None


def _with_read_preconditions(handler):
  """Object reads: 412 / 304 for ifGenerationMatch / ifGenerationNotMatch, generation headers."""

  @functools.wraps(handler)
  def wrapper(request, response, storage, *args, **kwargs):
    bucket, name = request.params['bucket_name'], request.params['object_id']
    generation = _generation(storage, bucket, name)
    if generation is not None:
      match = _query(request, 'ifGenerationMatch')
      no_match = _query(request, 'ifGenerationNotMatch')
      if match is not None and int(match) != generation:
        response.status = HTTPStatus.PRECONDITION_FAILED
        return
      if no_match is not None and int(no_match) == generation:
        response.status = HTTPStatus.NOT_MODIFIED
        response['x-goog-generation'] = str(generation)
        return
    handler(request, response, storage, *args, **kwargs)
    if generation is not None and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      obj = storage.get_file_obj(bucket, name)
      response['x-goog-generation'] = str(obj['generation'])
      response['x-goog-metageneration'] = str(obj.get('metageneration', '1'))
      if obj.get('size') is not None:
        response['x-goog-stored-content-length'] = str(obj['size'])

  return wrapper


def _with_write_preconditions(handler, name_in_query=True):
  """Inserts and deletes: ifGenerationMatch (0: must not exist); 0-byte media uploads."""

  @functools.wraps(handler)
  def wrapper(request, response, storage, *args, **kwargs):
    if _query(request, 'uploadType') == 'media' and request.data is None:
      request._data = b''  # pylint: disable=protected-access
    match = _query(request, 'ifGenerationMatch')
    if match is not None and 'upload_id' not in request.query:
      name = _query(request, 'name') if name_in_query else request.params.get('object_id')
      if name is not None and (_generation(storage, request.params['bucket_name'], name)
                               or 0) != int(match):
        response.status = HTTPStatus.PRECONDITION_FAILED
        response.json({'error': {'code': 412, 'message': 'Precondition Failed'}})
        return
    return handler(request, response, storage, *args, **kwargs)

  return wrapper


def _patch_emulator():
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  if getattr(objects, '_dssb_patched', False):
    return
  replace = {objects.download: _with_read_preconditions(objects.download),
             objects.get: _with_read_preconditions(objects.get),
             objects.insert: _with_write_preconditions(objects.insert),
             objects.delete: _with_write_preconditions(objects.delete, name_in_query=False)}
  for _, handlers in server.HANDLERS:  # the routing table holds the function objects
    for method, fn in list(handlers.items()):
      handlers[method] = replace.get(fn, fn)
  parse_request = server.RequestHandler.parse_request

  def parse_request_answering_100_continue(self):
    ok = parse_request(self)
    if ok and (self.headers.get('Expect') or '').lower() == '100-continue':
      self.wfile.write(b'HTTP/1.1 100 Continue\r\n\r\n')
    return ok

  server.RequestHandler.parse_request = parse_request_answering_100_continue
  objects._dssb_patched = True  # pylint: disable=protected-access


# ---------------------------------------------------------------------------------------------
# The TLS proxy for TensorFlow


def _certificates(cert_dir):
  """(ca.pem, leaf.pem, leaf.key): a throw-away CA and a certificate for the Google hosts."""
  os.makedirs(cert_dir, exist_ok=True)
  ca_key, ca_pem, key, csr, leaf, ext = (os.path.join(cert_dir, n) for n in (
      'ca.key', 'ca.pem', 'leaf.key', 'leaf.csr', 'leaf.pem', 'leaf.ext'))
  if all(os.path.exists(p) for p in (ca_pem, key, leaf)):
    return ca_pem, leaf, key
  openssl = lambda *args: subprocess.run(['openssl', *args], check=True, capture_output=True)
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', ca_key, '-out', ca_pem,
          '-days', '30', '-subj', '/CN=dssb-test-ca', '-addext',
          'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj',
          '/CN=' + GOOGLE_HOSTS[0])
  with open(ext, 'w') as f:
    f.write('basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n'
            'extendedKeyUsage=serverAuth\nsubjectAltName='
            + ','.join('DNS:' + h for h in GOOGLE_HOSTS) + '\n')
  openssl('x509', '-req', '-in', csr, '-CA', ca_pem, '-CAkey', ca_key, '-CAcreateserial', '-out',
          leaf, '-days', '30', '-sha256', '-extfile', ext)
  return ca_pem, leaf, key


def _read_head(stream):
  line = stream.readline(65537)
  if not line:
    return None, None
  headers = []
  while True:
    header = stream.readline(65537)
    if header in (b'\r\n', b'\n', b''):
      return line.decode('latin-1').rstrip('\r\n'), headers
    name, _, value = header.decode('latin-1').partition(':')
    headers.append((name.strip(), value.strip()))


def _read_body(stream, headers):
  """Chunked encoding wins over Content-Length (TF's resumable PUT sends both)."""
  fields = {k.lower(): v for k, v in headers}
  if fields.get('transfer-encoding', '').lower() != 'chunked':
    return stream.read(int(fields.get('content-length', '0')))
  body = b''
  while True:
    size = int(stream.readline().strip().split(b';')[0] or b'0', 16)
    if size == 0:
      while stream.readline() not in (b'\r\n', b'\n', b''):
        pass
      return body
    body += stream.read(size)
    stream.readline()


class _ProxyHandler(socketserver.StreamRequestHandler):
  """CONNECT to a Google host -> TLS with our certificate -> each request to the emulator."""

  def handle(self):
    line, _ = _read_head(self.rfile)
    if not line:
      return
    method, target, _ = line.split(' ', 2)
    host = target.rsplit(':', 1)[0]
    if method != 'CONNECT' or host not in GOOGLE_HOSTS:
      self.wfile.write(b'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')
      return
    # Without TCP_NODELAY each response waits ~40 ms behind the client's delayed ACK.
    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    self.wfile.write(b'HTTP/1.1 200 Connection established\r\n\r\n')
    self.wfile.flush()
    tls = self.server.ssl_context.wrap_socket(self.connection, server_side=True)
    reader, writer = tls.makefile('rb'), tls.makefile('wb')
    try:
      while self._forward(reader, writer):
        pass
    except (ConnectionError, ssl.SSLError, OSError):
      pass

  def _forward(self, reader, writer):
    line, headers = _read_head(reader)
    if not line:
      return False
    method, target, _ = line.split(' ', 2)
    if any(k.lower() == 'expect' and '100' in v for k, v in headers):
      writer.write(b'HTTP/1.1 100 Continue\r\n\r\n')
      writer.flush()
    body = _read_body(reader, headers)
    forwarded = {k: v for k, v in headers if k.lower() not in _HOP_HEADERS}
    forwarded['Content-Length'] = str(len(body))
    emulator = self.server.emulator
    conn = http.client.HTTPConnection(emulator.hostname, emulator.port, timeout=300)
    try:
      payload = body if body or method in ('POST', 'PUT', 'PATCH') else None
      conn.request(method, target, body=payload, headers=forwarded)
      response = conn.getresponse()
      data = response.read()
    finally:
      conn.close()
    out = [f'HTTP/1.1 {response.status} {response.reason}']
    for name, value in response.getheaders():
      if name.lower() in _HOP_HEADERS or name.lower() == 'content-length':
        continue
      if name.lower() == 'location':  # resumable uploads continue through the tunnel
        for host in GOOGLE_HOSTS:
          value = value.replace(f'http://{host}/', f'https://{host}/')
      out.append(f'{name}: {value}')
    if method == 'HEAD':
      out.append(f'Content-Length: {response.getheader("Content-Length", "0")}')
      data = b''
    else:
      out.append(f'Content-Length: {len(data)}')
    out.append('Connection: keep-alive')
    writer.write(('\r\n'.join(out) + '\r\n\r\n').encode('latin-1') + data)
    writer.flush()
    return True


class _ThreadingServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
  daemon_threads = True
  allow_reuse_address = True


# ---------------------------------------------------------------------------------------------


class FakeGcs:
  """The emulator (one in-memory bucket) and the proxy, served from threads of this process."""

  def __init__(self, bucket: str, cert_dir: str):
    from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
    _patch_emulator()
    logging.getLogger('gcp_storage_emulator').setLevel(logging.CRITICAL)
    self.bucket = bucket
    self._emulator = server.create_server('127.0.0.1', 0, in_memory=True, default_bucket=bucket)
    self._emulator._api.daemon = True  # pylint: disable=protected-access
    self._emulator.start()
    host, port = self._emulator._api._httpd.server_address  # pylint: disable=protected-access
    self.endpoint = f'http://{host}:{port}'
    ca_pem, leaf, key = _certificates(cert_dir)
    self._proxy = _ThreadingServer(('127.0.0.1', 0), _ProxyHandler)
    self._proxy.emulator = urllib.parse.urlsplit(self.endpoint)
    self._proxy.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    self._proxy.ssl_context.load_cert_chain(leaf, key)
    self._proxy.ssl_context.num_tickets = 0
    threading.Thread(target=self._proxy.serve_forever, daemon=True).start()
    proxy_url = f'http://127.0.0.1:{self._proxy.server_address[1]}'
    self.env = {
        'HTTPS_PROXY': proxy_url, 'https_proxy': proxy_url, 'CURL_CA_BUNDLE': ca_pem,  # TF
        'TENSORSTORE_GCS_HTTP_URL': self.endpoint,  # tensorstore (orbax's arrays)
        'STORAGE_EMULATOR_HOST': self.endpoint,  # google-cloud-storage (orbax's bucket check)
        'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'dummy', 'NO_GCE_CHECK': 'true',
        'NO_PROXY': '127.0.0.1,localhost', 'no_proxy': '127.0.0.1,localhost',
        'GCS_RETRY_CONFIG_MAX_RETRIES': '2',  # fail in seconds, not minutes
    }

  def _object_url(self, name, **query):
    return (f'{self.endpoint}/storage/v1/b/{self.bucket}/o/'
            f'{urllib.parse.quote(name, safe="")}?' + urllib.parse.urlencode(query))

  def upload(self, name: str, data: bytes) -> None:
    url = (f'{self.endpoint}/upload/storage/v1/b/{self.bucket}/o?'
           + urllib.parse.urlencode({'uploadType': 'media', 'name': name}))
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method='POST')) as r:
      assert r.status == 200, r.status

  def read(self, name: str) -> bytes:
    with urllib.request.urlopen(self._object_url(name, alt='media')) as r:
      return r.read()

  def list(self, prefix: str = '') -> list:
    names, token = [], None
    while True:
      query = {'prefix': prefix, **({'pageToken': token} if token else {})}
      url = f'{self.endpoint}/storage/v1/b/{self.bucket}/o?' + urllib.parse.urlencode(query)
      with urllib.request.urlopen(url) as r:
        page = json.load(r)
      names += [item['name'] for item in page.get('items', [])]
      token = page.get('nextPageToken')
      if not token:
        return sorted(names)

  def stop(self):
    self._proxy.shutdown()
    self._proxy.server_close()
    self._emulator.stop()
