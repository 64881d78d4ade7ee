"""Run the project's nginx.conf on loopback: only ports, upstream hosts and file paths
change, every directive of the committed file is kept."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.support.repo_files import NGINX_CONF, nginx_upstream_servers


def nginx_binary() -> str:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                       else None)
    if binary is None:
        raise RuntimeError("nginx is not installed: the load-balancer tests need it "
                           "(apt-get install -y nginx)")
    return binary


def localize(prefix: Path, listen_port: int, upstream_ports: list[int]) -> Path:
    """Write a copy of nginx.conf under ``prefix`` that listens on ``listen_port`` and sends
    the upstream's servers, in order, to 127.0.0.1:<upstream_ports>. Returns its path."""
    conf = NGINX_CONF.read_text()
    servers = nginx_upstream_servers(conf)
    if len(servers) != len(upstream_ports):
        raise ValueError(f"nginx.conf has {len(servers)} upstream servers, "
                         f"{len(upstream_ports)} ports given")
    for server, port in zip(servers, upstream_ports, strict=True):
        conf = re.sub(r"(\bserver\s+)" + re.escape(server) + r"(?=[\s;])",
                      rf"\g<1>127.0.0.1:{port}", conf, count=1)
    conf, listens = re.subn(r"^(\s*)listen\s+[^;]+;", rf"\g<1>listen 127.0.0.1:{listen_port};",
                            conf, flags=re.M)
    if listens != 1:
        raise ValueError(f"expected one listen directive in nginx.conf, found {listens}")
    logs = prefix / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Worker processes may run as an unprivileged user: let them reach the prefix.
    prefix.chmod(0o755)
    conf = re.sub(r"^(\s*)pid\s+[^;]+;", rf"\g<1>pid {logs / 'nginx.pid'};", conf, flags=re.M)
    conf = re.sub(r"^(\s*error_log)\s+\S+", rf"\g<1> {logs / 'error.log'}", conf, flags=re.M)
    conf = re.sub(r"^(\s*access_log)\s+(?!off)\S+", rf"\g<1> {logs / 'access.log'}", conf,
                  flags=re.M)
    # nginx's temp files (request bodies) under the prefix, so no root-owned path is needed.
    temp = "\n".join(f"    {name}_temp_path {prefix / name};"
                     for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = re.sub(r"http\s*\{", "http {\n" + temp, conf, count=1)
    path = prefix / "nginx.conf"
    path.write_text(conf)
    return path


def nginx_command(conf: Path, *args: str) -> list[str]:
    """nginx with ``conf``, its prefix and its startup error log beside it."""
    prefix = conf.parent
    return [nginx_binary(), "-p", str(prefix), "-c", str(conf),
            "-e", str(prefix / "logs" / "error.log"), *args]
