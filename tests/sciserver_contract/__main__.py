"""Run the contract server: ``python -m tests.sciserver_contract --root DIR --ready-file FILE``.

Binds 127.0.0.1 on a free port chosen by the OS, then writes ``{"url": ..., "pid": ...}`` to the ready file
(atomically), so the fixture that started it knows where to connect; serves with werkzeug's threaded server
until SIGTERM/SIGINT, then kills any job still running.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from werkzeug.serving import make_server

from .app import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, type=Path, help="directory for volumes, jobs and containers")
    parser.add_argument("--ready-file", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--export-urls",
        action="store_true",
        help="give the jobs it runs this server's URLs as the sciserver backends' defaults "
        "(DEEPFORGE_SCISERVER_*_URL), as code in a real SciServer job reaches SciServer by default",
    )
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    app = create_app(args.root)
    server = make_server(args.host, 0, app, threaded=True)
    base_url = f"http://{args.host}:{server.server_port}/"
    app.config["STATE"].base_url = base_url
    if args.export_urls:
        for backend in ("SCISERVER_FILES", "SCISERVER_COMPUTE"):
            os.environ[f"DEEPFORGE_{backend}_LOGIN_URL"] = base_url + "login-portal/keystone/v3/tokens"
            os.environ[f"DEEPFORGE_{backend}_FILE_SERVICE_URL"] = base_url + "fileservice/api/"
        os.environ["DEEPFORGE_SCISERVER_COMPUTE_RACM_URL"] = base_url + "racm"

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    tmp = args.ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": base_url, "pid": os.getpid()}))
    os.replace(tmp, args.ready_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        app.config["JOBS"].stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
