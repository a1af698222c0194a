"""A local stand-in for the Slack Web API, for tests, demos and benchmarks.

A real HTTP server on 127.0.0.1 (port 0 by default) that answers the Web API methods
kpibot uses with Slack's response shapes and Slack's errors, checks every `blocks`
payload the way Slack does (`invalid_blocks`), and records every call so tests can poll
for what was sent. Point `SLACK_API_URL` at `.url`; give Bolt a `.response_url()`.

    with SlackStandin() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.url)
        client.chat_postMessage(channel="C1", text="hi")
        slack.wait_for("chat.postMessage")

Run it alone with `python -m bot.standin --port 3999`.

Like Slack, every method answers POST (slack_sdk's WebClient always POSTs) and GET,
form-encoded or JSON. A token must come as `Authorization: Bearer xoxb-…` (or a
`token` argument), else `invalid_auth`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import mimetypes
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from bot import blockkit

TEAM_ID = "T0001"
TEAM_DOMAIN = "kpibot-test"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
MAX_TEXT = 40_000  # Slack's msg_too_long limit (blockkit keeps our own, smaller one)
FIRST_TS = 1_700_000_000_000_100  # microseconds; ts "1700000000.000100"
JSON_ARGS = ("blocks", "attachments", "view", "files")  # sent as JSON strings in forms
UPLOAD = "upload"  # pseudo method names for the two non-API endpoints
RESPONSE_URL = "response_url"


class SlackError(Exception):
    """An answer `{"ok": false, "error": ...}` (HTTP 200, as Slack does)."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass(frozen=True)
class Call:
    """One request the stand-in answered."""

    method: str  # API method, or "upload" / "response_url"
    args: dict[str, Any]  # query + form or JSON body; JSON-string args decoded
    headers: dict[str, str]
    time: float  # time.time() when it arrived
    status: int  # HTTP status answered
    response: Any  # the JSON (dict) or text answered
    path: str = ""

    @property
    def ok(self) -> bool:
        if isinstance(self.response, dict):
            return self.status == 200 and bool(self.response.get("ok"))
        return self.status == 200


@dataclass
class Channel:
    id: str
    name: str
    is_member: bool = True
    is_archived: bool = False
    is_private: bool = False
    is_im: bool = False

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not (self.is_private or self.is_im),
            "is_group": self.is_private,
            "is_im": self.is_im,
            "is_private": self.is_private,
            "is_archived": self.is_archived,
            "is_member": self.is_member,
            "context_team_id": TEAM_ID,
        }


@dataclass
class _Fault:
    """A queued misbehaviour for one method: a Slack error, a 429 or an HTTP error."""

    kind: str  # "error" | "ratelimited" | "http"
    times: int
    error: str = ""
    status: int = 500
    retry_after: int = 1


@dataclass
class _Answer:
    status: int
    body: Any  # dict → JSON, str → text
    headers: dict[str, str] = field(default_factory=dict)


class SlackStandin:
    """The stand-in. Start it (or use `with`), aim a WebClient at `.url`, inspect `.calls`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        strict_channels: bool = False,
        post_limit_per_channel_per_second: float | None = None,
        workspace_limit_per_second: float | None = None,
        random_429_fraction: float = 0.0,
        seed: int | None = None,
        retry_after: int = 1,
    ) -> None:
        self.host, self.port = host, port
        # A channel nobody registered is a public channel the bot is in, unless strict.
        self.strict_channels = strict_channels
        self.post_limit_per_channel_per_second = post_limit_per_channel_per_second
        self.workspace_limit_per_second = workspace_limit_per_second
        self.random_429_fraction = random_429_fraction
        self.retry_after = retry_after  # Retry-After of limit and random 429s
        self._random = random.Random(seed)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[Call] = []
        self._channels: dict[str, Channel] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._usergroups: dict[str, dict[str, Any]] = {}
        self._messages: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # ch → ts → msg
        self._ims: dict[str, str] = {}  # user id → D… channel id
        self._uploads: dict[str, dict[str, Any]] = {}  # file id → upload
        self._faults: dict[str, deque[_Fault]] = defaultdict(deque)
        self._posted_at: dict[str, deque[float]] = defaultdict(deque)  # window for limits
        self._ts = itertools.count(FIRST_TS, 100)
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.update": self._update,
            "chat.getPermalink": self._permalink,
            "files.getUploadURLExternal": self._upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroup_users,
            "users.info": self._user_info,
            "conversations.info": self._conversation_info,
            "conversations.open": self._conversation_open,
            "views.publish": self._views_publish,
        }

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> SlackStandin:
        server = _Server((self.host, self.port), _handler_for(self))
        self._server = server
        self.port = server.server_address[1]
        # A short poll interval keeps stop() (and so every test's teardown) fast.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.02,), name="slack-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SlackStandin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """What SLACK_API_URL is set to; ends with `/` as WebClient's base_url must."""
        return f"{self.base}/api/"

    def response_url(self, name: str | None = None) -> str:
        """A response_url whose posts are recorded as method "response_url"."""
        name = name or f"r{next(self._ids)}"
        return f"{self.base}/response/{quote(name, safe='')}"

    # --- knobs ----------------------------------------------------------------------------

    def set_channel(
        self,
        id: str,
        *,
        name: str | None = None,
        is_member: bool = True,
        is_archived: bool = False,
        is_private: bool = False,
    ) -> None:
        with self._lock:
            self._channels[id] = Channel(id, name or id.lower(), is_member, is_archived, is_private)

    def set_user(self, id: str, *, name: str | None = None, tz: str = "UTC", **extra: Any) -> None:
        with self._lock:
            self._users[id] = {**_user(id, name, tz), **extra}

    def set_usergroups(self, groups: dict[str, dict[str, Any]]) -> None:
        """`{"S1": {"handle": "hr", "users": ["U1"]}}`; replaces all groups."""
        with self._lock:
            self._usergroups = {gid: dict(group) for gid, group in groups.items()}

    def fail_next(self, method: str, error: str = "channel_not_found", times: int = 1) -> None:
        self._add_fault(method, _Fault("error", times, error=error))

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        self._add_fault(method, _Fault("ratelimited", times, retry_after=retry_after))

    def fail_http(self, method: str, status: int = 500, times: int = 1) -> None:
        self._add_fault(method, _Fault("http", times, status=status))

    def _add_fault(self, method: str, fault: _Fault) -> None:
        with self._lock:
            self._faults[method].append(fault)

    # --- inspection -----------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """A snapshot, safe to iterate while the server keeps recording."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str, *, ok: bool | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    def wait_for(
        self, method: str, count: int = 1, timeout: float = 5.0, *, ok: bool | None = None
    ) -> list[Call]:
        """Block until `count` calls to `method` were recorded; then return them all.

        Waits on a condition the server notifies, with a deadline: no sleeps.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := self.calls_to(method, ok=ok)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [c.method for c in self._calls]
                    raise AssertionError(
                        f"{len(found)} of {count} {method} calls within {timeout}s; seen {seen}"
                    )
                self._changed.wait(remaining)
        return found

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """The channel's messages as they stand now (edits applied), oldest first."""
        with self._lock:
            stored = self._messages.get(channel, {})
            return [json.loads(json.dumps(stored[ts])) for ts in sorted(stored)]

    def responses(self, url_or_name: str) -> list[dict[str, Any]]:
        """Bodies posted to one response_url (by URL or by name)."""
        name = unquote(url_or_name.rstrip("/").rsplit("/", 1)[-1])
        return [
            call.args
            for call in self.calls_to(RESPONSE_URL, ok=True)
            if unquote(call.path.rsplit("/", 1)[-1]) == name
        ]

    def uploads(self) -> list[dict[str, Any]]:
        """Files uploaded to upload URLs: file_id, filename, size, content_type, data."""
        with self._lock:
            return [dict(upload) for upload in self._uploads.values() if "data" in upload]

    # --- request handling (called from server threads) ------------------------------------

    def handle(self, http_method: str, path: str, headers: dict[str, str], body: bytes) -> _Answer:
        parts = urlsplit(path)
        route, _, rest = parts.path.lstrip("/").partition("/")
        if route == "api":
            method, args = rest, _parse_args(parts.query, headers, body)
            answer = self._answer_api(method, args, headers)
        elif route == "upload":
            method, args = UPLOAD, {"file_id": rest, "size": len(body)}
            args["content_type"] = headers.get("content-type", "")
            answer = self._answer_upload(rest, body, args["content_type"])
        elif route == "response":
            method, args = RESPONSE_URL, _json_object(body)
            answer = self._answer_response_url(args)
        else:
            method, args = parts.path, {}
            answer = _Answer(404, "not_found")
        self._record(Call(method, args, headers, time.time(), answer.status, answer.body, path))
        return answer

    def _record(self, call: Call) -> None:
        with self._changed:
            self._calls.append(call)
            self._changed.notify_all()

    def _answer_api(self, method: str, args: dict[str, Any], headers: dict[str, str]) -> _Answer:
        try:
            with self._lock:  # one request at a time: simple, and fast enough for tests
                if (fault := self._take_fault(method)) is not None:
                    return fault
                if (limited := self._over_limit(method, args)) is not None:
                    return limited
                _check_token(args, headers)
                handler = self._methods.get(method)
                if handler is None:
                    raise SlackError("unknown_method")
                return _Answer(200, {"ok": True, **handler(args)})
        except SlackError as error:
            return _Answer(200, {"ok": False, "error": error.error, **error.extra})

    def _take_fault(self, method: str) -> _Answer | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.popleft()
        if fault.kind == "ratelimited":
            return _ratelimited(fault.retry_after)
        if fault.kind == "http":
            return _Answer(fault.status, HTTPStatus(fault.status).phrase)
        if method in (UPLOAD, RESPONSE_URL):  # plain-text endpoints answer errors as text
            return _Answer(400, fault.error)
        return _Answer(200, {"ok": False, "error": fault.error})

    def _over_limit(self, method: str, args: dict[str, Any]) -> _Answer | None:
        """Slack's limits, when switched on, over a sliding one-second window: per method per
        workspace (as Slack applies them: "per API method per workspace per app"), and for
        chat.postMessage also per channel."""
        now = time.monotonic()
        checks = [(f"method:{method}", self.workspace_limit_per_second)]
        if method == "chat.postMessage":
            channel = f"channel:{args.get('channel')}"
            checks.append((channel, self.post_limit_per_channel_per_second))
        for key, limit in checks:
            if limit is None:
                continue
            window = self._posted_at[key]
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= limit:
                return _ratelimited(self.retry_after)
        for key, limit in checks:
            if limit is not None:
                self._posted_at[key].append(now)
        # auth.test is spared so that an app under benchmark can still start.
        chance = self.random_429_fraction if method != "auth.test" else 0.0
        if chance and self._random.random() < chance:
            return _ratelimited(self.retry_after)
        return None

    def _answer_upload(self, file_id: str, body: bytes, content_type: str) -> _Answer:
        with self._lock:
            if (fault := self._take_fault(UPLOAD)) is not None:
                return fault
            upload = self._uploads.get(file_id)
            if upload is None:
                return _Answer(404, "file_not_found")
            upload.update(size=len(body), content_type=content_type, data=body)
        return _Answer(200, f"OK - {len(body)}")

    def _answer_response_url(self, body: dict[str, Any]) -> _Answer:
        with self._lock:
            if (fault := self._take_fault(RESPONSE_URL)) is not None:
                return fault
        if "blocks" in body and blockkit.problems(body["blocks"]):
            return _Answer(400, "invalid_blocks")
        if not (body.get("text") or body.get("blocks") or body.get("delete_original")):
            return _Answer(400, "no_text")
        return _Answer(200, "ok")

    # --- channels, users, messages ----------------------------------------------------------

    def _channel(self, channel_id: Any) -> Channel:
        if not isinstance(channel_id, str) or not channel_id:
            raise SlackError("channel_not_found")
        if channel_id[0] in "UW":  # posting to a user id goes to the DM with them
            channel_id = self._im_for(channel_id)
        if channel_id in self._channels:
            return self._channels[channel_id]
        if self.strict_channels or channel_id[0] not in "CGD":
            raise SlackError("channel_not_found")
        return Channel(channel_id, channel_id.lower(), is_private=channel_id[0] == "G")

    def _writable(self, channel_id: Any) -> Channel:
        channel = self._channel(channel_id)
        if channel.is_archived:
            raise SlackError("is_archived")
        # chat:write.public lets the bot post in public channels it has not joined.
        if channel.is_private and not channel.is_member:
            raise SlackError("not_in_channel")
        return channel

    def _im_for(self, user_id: str) -> str:
        if user_id not in self._ims:
            dm = f"D{next(self._ids):08d}"
            self._ims[user_id] = dm
            self._channels[dm] = Channel(dm, user_id.lower(), is_im=True)
        return self._ims[user_id]

    def _message(self, channel_id: str, ts: Any) -> dict[str, Any]:
        message = self._messages.get(channel_id, {}).get(str(ts))
        if message is None:
            raise SlackError("message_not_found")
        return message

    def _next_ts(self) -> str:
        micros = next(self._ts)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _store(self, channel: Channel, args: dict[str, Any], **extra: Any) -> dict[str, Any]:
        ts = self._next_ts()
        message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": ts}
        message.update(_content(args), **extra)
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        self._messages[channel.id][ts] = message
        return message

    # --- Web API methods: args in, response fields out (or SlackError) -------------------

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": "kpibot test",
            "user": "kpibot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._writable(args.get("channel"))
        _check_content(args)
        message = self._store(channel, args)
        return {"channel": channel.id, "ts": message["ts"], "message": message}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self._writable(args.get("channel"))
        if not args.get("user"):
            raise SlackError("user_not_found")
        _check_content(args)
        return {"message_ts": self._next_ts()}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._writable(args.get("channel"))
        message = self._message(channel.id, args.get("ts"))
        _check_content(args)
        message.update(_content(args), edited={"user": BOT_USER_ID, "ts": self._next_ts()})
        return {"channel": channel.id, "ts": message["ts"], "text": message.get("text", "")}

    def _permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        ts = str(args.get("message_ts"))
        self._message(channel.id, ts)
        link = f"https://{TEAM_DOMAIN}.slack.com/archives/{channel.id}/p{ts.replace('.', '')}"
        return {"channel": channel.id, "permalink": link}

    def _upload_url(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("filename") or not str(args.get("length", "")).isdigit():
            raise SlackError("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self._uploads[file_id] = {
            "file_id": file_id,
            "filename": args["filename"],
            "length": int(args["length"]),
            "alt_txt": args.get("alt_txt"),
        }
        return {"upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}

    def _complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        files = args.get("files")
        if not isinstance(files, list) or not files:
            raise SlackError("invalid_arguments")
        channel = self._writable(args["channel_id"]) if args.get("channel_id") else None
        shared = [self._shared_file(item, channel) for item in files]
        if channel is not None:
            comment = {"text": args.get("initial_comment") or ""}
            self._store(channel, {**comment, "thread_ts": args.get("thread_ts")}, files=shared)
        return {"files": shared}

    def _shared_file(self, item: Any, channel: Channel | None) -> dict[str, Any]:
        upload = self._uploads.get(item.get("id")) if isinstance(item, dict) else None
        if upload is None or "data" not in upload:
            raise SlackError("file_not_found")
        name = upload["filename"]
        return {
            "id": upload["file_id"],
            "name": name,
            "title": item.get("title") or name,
            "mimetype": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "filetype": name.rpartition(".")[2].lower() if "." in name else "binary",
            "size": upload["size"],
            "url_private": f"https://files.slack.com/files-pri/{TEAM_ID}-{upload['file_id']}/{name}",
            "permalink": f"https://{TEAM_DOMAIN}.slack.com/files/{BOT_USER_ID}/{upload['file_id']}",
            "channels": [channel.id] if channel else [],
        }

    def _usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        with_users = str(args.get("include_users", "")).lower() in ("1", "true")
        groups = [
            _usergroup(gid, group, with_users=with_users) for gid, group in self._usergroups.items()
        ]
        return {"usergroups": groups}

    def _usergroup_users(self, args: dict[str, Any]) -> dict[str, Any]:
        group = self._usergroups.get(str(args.get("usergroup")))
        if group is None:
            raise SlackError("no_such_subteam")
        return {"users": list(group.get("users", []))}

    def _user_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = str(args.get("user", ""))
        if user_id in self._users:
            return {"user": dict(self._users[user_id])}
        if user_id[:1] not in ("U", "W") or self.strict_channels:
            raise SlackError("user_not_found")
        return {"user": _user(user_id, None, "UTC")}

    def _conversation_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        if channel.is_private and not channel.is_member:  # a bot sees only those it is in
            raise SlackError("channel_not_found")
        return {"channel": channel.info()}

    def _conversation_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = [u for u in str(args.get("users", "")).split(",") if u]
        if len(users) != 1:  # group DMs are not something kpibot opens
            raise SlackError("users_list_not_supplied" if not users else "invalid_arguments")
        return {"channel": {"id": self._im_for(users[0])}}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        if not args.get("user_id") or not isinstance(view, dict):
            raise SlackError("invalid_arguments")
        if found := blockkit.problems(view.get("blocks", [])):
            raise SlackError("invalid_arguments", response_metadata={"messages": found})
        return {"view": {"id": f"V{next(self._ids):08d}", "team_id": TEAM_ID, **view}}


# --- helpers without state ------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # benchmarks open many connections at once


def _handler_for(standin: SlackStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = standin.handle(self.command, self.path, headers, body)
            if isinstance(answer.body, dict):
                data, kind = json.dumps(answer.body).encode(), "application/json; charset=utf-8"
            else:
                data, kind = str(answer.body).encode(), "text/plain; charset=utf-8"
            self.send_response(answer.status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # calls are recorded; stderr noise helps nobody

    return Handler


def _parse_args(query: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """Query string, then form or JSON body, merged; JSON-string arguments decoded."""
    args: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if headers.get("content-type", "").startswith("application/json"):
        args.update(_json_object(body))
    else:
        args.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    for name in JSON_ARGS:
        if isinstance(args.get(name), str):
            try:
                args[name] = json.loads(args[name])
            except json.JSONDecodeError:
                args[name + "_undecodable"] = args.pop(name)
    return args


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"_undecodable": body.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"_undecodable": value}


def _check_token(args: dict[str, Any], headers: dict[str, str]) -> None:
    header = headers.get("authorization", "")
    token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else args.get("token")
    if not isinstance(token, str) or not token.startswith("xoxb-"):
        raise SlackError("invalid_auth")


def _check_content(args: dict[str, Any]) -> None:
    """What Slack checks in text and blocks of chat.postMessage, postEphemeral, update."""
    if "blocks_undecodable" in args:
        raise SlackError("invalid_blocks_format")
    if "blocks" in args:
        if found := blockkit.problems(args["blocks"]):
            messages = [f"[ERROR] {problem}" for problem in found]
            raise SlackError(
                "invalid_blocks", errors=found, response_metadata={"messages": messages}
            )
    elif not args.get("text") and not args.get("attachments"):
        raise SlackError("no_text")
    if len(str(args.get("text") or "")) > MAX_TEXT:
        raise SlackError("msg_too_long")


def _content(args: dict[str, Any]) -> dict[str, Any]:
    return {key: args[key] for key in ("text", "blocks", "attachments", "metadata") if key in args}


def _ratelimited(retry_after: int) -> _Answer:
    body = {"ok": False, "error": "ratelimited"}
    return _Answer(429, body, {"Retry-After": str(retry_after)})


def _user(user_id: str, name: str | None, tz: str) -> dict[str, Any]:
    name = name or f"user-{user_id.lower()}"
    return {
        "id": user_id,
        "team_id": TEAM_ID,
        "name": name,
        "real_name": name,
        "tz": tz,
        "deleted": False,
        "is_bot": False,
        "profile": {"display_name": name, "real_name": name},
    }


def _usergroup(gid: str, group: dict[str, Any], *, with_users: bool) -> dict[str, Any]:
    handle = group.get("handle", gid.lower())
    found = {"id": gid, "team_id": TEAM_ID, "handle": handle, "name": group.get("name", handle)}
    users = list(group.get("users", []))
    found["user_count"] = len(users)
    if with_users:
        found["users"] = users
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the local Slack Web API stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3999)
    parser.add_argument("--strict-channels", action="store_true")
    options = parser.parse_args(argv)
    standin = SlackStandin(
        host=options.host, port=options.port, strict_channels=options.strict_channels
    )
    with standin:
        print(f"Slack stand-in at {standin.url} (SLACK_API_URL); Ctrl-C stops it", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
