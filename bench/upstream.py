"""The canned OpenAI-shaped upstream: nginx answering from memory.

``POST /v1/chat/completions`` returns one canned ``chat.completion`` (from the config);
``POST /stream-<N>/v1/chat/completions`` returns a canned SSE stream of N content chunks
(a static file sent as ``text/event-stream``: a finish chunk, a usage chunk and
``[DONE]`` follow the content). nginx ignores the request body, so any body works.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

STREAM_SIZES = (10, 50, 1000)
CANNED_MODEL = "bench-model"
CHUNK_TEXT = "tok "
CREATED = 1700000000


def canned_completion() -> dict[str, object]:
    return {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED,
        "model": CANNED_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }


def _sse_event(choices: list[dict[str, object]], **extra: object) -> str:
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
             "model": CANNED_MODEL, "choices": choices, **extra}
    return "data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n"


def canned_stream(content_chunks: int) -> bytes:
    """An OpenAI stream: ``content_chunks`` deltas (the first with the role), then the
    finish chunk, the usage chunk (as with ``stream_options.include_usage``), ``[DONE]``."""
    events = []
    for index in range(content_chunks):
        delta: dict[str, str] = {"content": CHUNK_TEXT}
        if index == 0:
            delta = {"role": "assistant", **delta}
        events.append(_sse_event([{"index": 0, "delta": delta, "finish_reason": None}]))
    events.append(_sse_event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    usage = {"prompt_tokens": 9, "completion_tokens": content_chunks,
             "total_tokens": 9 + content_chunks}
    events.append(_sse_event([], usage=usage))
    events.append("data: [DONE]\n\n")
    return "".join(events).encode()


def stream_route(content_chunks: int) -> str:
    """The path prefix (and the tako deployment / model name) of a canned stream."""
    return f"stream-{content_chunks}"


def _stream_locations(workdir: Path) -> str:
    blocks = []
    for size in STREAM_SIZES:
        name = stream_route(size)
        (workdir / "sse" / f"{name}.sse").write_bytes(canned_stream(size))
        # The static handler refuses POST; the 405 is redirected (as GET) to the file.
        blocks.append(f"""
    location = /{name}/v1/chat/completions {{
      error_page 405 =200 /sse/{name}.sse;
      return 405;
    }}""")
    return "".join(blocks)


def nginx_config(workdir: Path, port: int) -> str:
    canned = json.dumps(canned_completion()).replace("'", "\\'")
    (workdir / "sse").mkdir(exist_ok=True)
    return f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  keepalive_requests 1000000;
  client_max_body_size 16m;
  client_body_buffer_size 2m;
  sendfile on;
  open_file_cache max=16 inactive=600s;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{canned}';
    }}
    location /sse/ {{
      internal;
      types {{ }}
      default_type text/event-stream;
      alias {workdir}/sse/;
    }}{_stream_locations(workdir)}
  }}
}}
"""


@dataclass
class Upstream:
    port: int
    proc: subprocess.Popen[bytes]

    def base_url(self, route: str = "") -> str:
        """The OpenAI base URL (ending in /v1) of the canned answer ``route`` names."""
        prefix = f"/{route}" if route else ""
        return f"http://127.0.0.1:{self.port}{prefix}/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def start_upstream(workdir: Path, port: int) -> Upstream:
    """nginx on ``port``, not yet waited for (see ``tests.support.net.wait_for_port``)."""
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir, port))
    # Run as root, nginx's worker is "nobody": let it reach the stream files.
    workdir.chmod(0o711)
    (workdir / "sse").chmod(0o755)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir)])
    return Upstream(port=port, proc=proc)
