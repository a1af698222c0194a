"""`kpibot serve`: Bolt behind waitress (a production WSGI server) on one URL, plus /healthz."""

import json
import logging
import signal
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl

from slack_bolt import App, BoltContext, BoltRequest
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from slack_bolt.request.internals import build_context
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import text
from sqlalchemy.engine import Engine

EVENTS_PATH = "/slack/events"
log = logging.getLogger("kpibot")


class FormSafeRequest(BoltRequest):
    """slack-bolt 1.30 reads any form body that merely *contains* "payload" as an interactivity
    payload (`"payload" in body` in slack_bolt/request/internals.py::parse_body); a slash command
    such as `/kpi payload errors` then loses its whole body and matches no listener. Re-read such
    bodies by their keys, and rebuild the context from them."""

    def __init__(self, *, body: str, query, headers) -> None:
        super().__init__(body=body, query=query, headers=headers)
        if self.body or not body or body.lstrip().startswith("{"):
            return
        params = dict(parse_qsl(body, keep_blank_values=True))
        if "payload" not in params:
            self.body = params
            self.context = build_context(BoltContext({}), self.body)


def _plain_timestamp(request: BoltRequest) -> bool:
    """slack_sdk's SignatureVerifier raises on a timestamp header that is not an integer
    (`int("abc")`) instead of refusing it; Bolt then hands the unverified request to the app's
    error handler, which would answer it, even at a response_url of the sender's choosing. Such
    a request is refused here, as any other that does not verify. (A missing header is refused
    by Bolt itself.)"""
    stamp = request.headers.get("x-slack-request-timestamp", [None])[0]
    return stamp is None or (stamp.isascii() and stamp.isdigit())


class KpibotWsgi(SlackRequestHandler):
    def __init__(self, app: App, engine: Engine) -> None:
        super().__init__(app, path=EVENTS_PATH)
        self.engine = engine

    def dispatch(self, request: WsgiHttpRequest) -> BoltResponse:
        body, headers = request.get_body(), request.get_headers()
        try:
            bolt_request = FormSafeRequest(body=body, query=request.query_string, headers=headers)
        except ValueError:  # a `payload` that is not JSON: Bolt cannot even read it
            return self.unreadable(body, headers)
        if not _plain_timestamp(bolt_request):
            return BoltResponse(status=401, body={"error": "invalid request"})  # as Bolt's
        return self.app.dispatch(bolt_request)

    def unreadable(self, body: str, headers: dict) -> BoltResponse:
        """400 for a body signed as Slack signs; 401, as any other unsigned request, if not."""
        verifier = SignatureVerifier(self.app._signing_secret)
        try:
            signed = verifier.is_valid_request(body, headers)
        except ValueError:  # a timestamp that is not a number (see _plain_timestamp)
            signed = False
        return BoltResponse(status=400 if signed else 401, body={"error": "invalid request"})

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO") == "/healthz":
            return self.health(start_response)
        return super().__call__(environ, start_response)

    def health(self, start_response) -> Iterable[bytes]:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            status, body = "200 OK", {"ok": True, "database": "ok"}
        except Exception as error:  # a health check reports, it does not raise
            status, body = (
                "503 Service Unavailable",
                {"ok": False, "database": type(error).__name__},
            )
        payload = json.dumps(body).encode()
        start_response(
            status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]


class Server:
    """waitress on a socket of its own, stoppable from another thread or a signal handler."""

    def __init__(self, wsgi_app, *, host: str, port: int, threads: int = 8) -> None:
        from waitress.server import create_server

        self._server = create_server(wsgi_app, host=host, port=port, threads=threads)
        self._stopping = threading.Event()
        self.host = host
        self.port = self._server.effective_port

    def run(self) -> None:
        try:
            self._server.run()
        except (OSError, ValueError):  # the socket closed under select(): expected on stop
            if not self._stopping.is_set():
                raise

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="kpibot-http", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop accepting, let queued requests finish, close every socket."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.task_dispatcher.shutdown(timeout=10)
        for channel in list(self._server._map.values()):
            channel.close()


def serve_http(app: App, engine: Engine, *, port: int, host: str = "0.0.0.0", threads: int = 8):
    """Serve until SIGTERM or SIGINT; in-flight requests finish, then the server closes."""
    server = Server(KpibotWsgi(app, engine), host=host, port=port, threads=threads)

    def shutdown(signum, _frame) -> None:
        log.warning("signal %s: shutting down", signum)
        server.stop()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    print(f"kpibot listening on http://{host}:{server.port}{EVENTS_PATH}", flush=True)
    server.run()
