"""The listening socket of the project's HTTP servers (dssb.serve, the review page).

Bound before uvicorn starts, so connections queue from then on and the printed address is
usable at once. IPPROTO_TCP is named because asyncio sets TCP_NODELAY on an accepted connection
only when its socket says so: without it, a response written in two parts waits for the
client's delayed ACK (~40 ms a request on a kept-alive connection, measured on the review page:
results/perf/review_page.md).
"""

import socket


def listening_socket(host: str, port: int, backlog: int = 128) -> socket.socket:
  """A TCP socket bound to (host, port) (port 0: a free one) and listening."""
  sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM,
                       socket.IPPROTO_TCP)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.bind((host, port))
  sock.listen(backlog)
  return sock
