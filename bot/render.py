"""Render Block Kit messages from the jinja2 templates in `templates/`.

Every template renders ONE JSON object: ``{"text": "<fallback>", "blocks": [...]}``.
Templates only place values; this module makes every placed value safe twice over:
for Slack (``&``, ``<``, ``>`` escaped, so user text cannot ``@here`` anyone) and for the
JSON string it lands in (quotes, backslashes, newlines). Text we build ourselves
(mentions, links) is a `Trusted` str and is placed as is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

import jinja2

TEMPLATE_PACKAGE = "templates"
FALLBACK_LIMIT = 4000  # ours; Slack's hard limit is 40 000, but nobody reads that much
ELLIPSIS = "…"

_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]+$")
_SLACK_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))


class Trusted(str):
    """Text we built (a mention, a link): placed in a template without Slack escaping.

    Whoever makes one promises it is Slack-safe AND JSON-string-safe; the helpers below
    (`mention`, `channel_link`, `plain`) keep that promise.
    """


def escape_slack(text: str) -> str:
    """Slack's own three escapes; nothing else (HTML escaping would show `&#39;`)."""
    for raw, entity in _SLACK_ESCAPES:
        text = text.replace(raw, entity)
    return text


def _json_inner(text: str) -> str:
    """Text made safe inside a JSON string literal (without the surrounding quotes)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def slack_text(value: object) -> str:
    """jinja2 `finalize`: every `{{ }}` goes through here."""
    if value is None:
        raise ValueError("format values before rendering")
    if isinstance(value, Trusted):
        return value
    if isinstance(value, bool):  # before int: bool is an int; JSON spells it lowercase
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("format values before rendering")
        # Numbers need no escaping, and unquoted they stay JSON numbers.
        return str(value)
    return _json_inner(escape_slack(str(value)))


# --- filters and globals the templates use -----------------------------------------------


def mention(user_id: str) -> str:
    """`<@U123>` for a real-looking user id; anything else is shown, escaped, not pinged."""
    if isinstance(user_id, str) and _USER_ID.match(user_id):
        return Trusted(f"<@{user_id}>")
    return str(user_id)


def channel_link(channel_id: str) -> str:
    """`<#C123>`: Slack shows the channel's current name."""
    if isinstance(channel_id, str) and _CHANNEL_ID.match(channel_id):
        return Trusted(f"<#{channel_id}>")
    return str(channel_id)


def plain(value: object) -> Trusted:
    """JSON-safe but NOT Slack-escaped: for fields Slack never formats.

    Button values, block ids and URLs come back to us byte for byte; escaping `&` there
    would hand the handler `R&amp;D` instead of `R&D`.
    """
    if value is None:
        raise ValueError("format values before rendering")
    return Trusted(_json_inner(str(value)))


def escaped_length(text: str) -> int:
    """Length after Slack escaping, which is what Slack's limits count."""
    return len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))


def clip(value: object, limit: int) -> object:
    """Shorten raw text so that, once escaped, it fits in `limit` characters.

    A filter, so templates need no arithmetic: `{{ message | clip(2000) }}`.
    Trusted text and numbers are ours and short; they pass.
    """
    if value is None or isinstance(value, Trusted | int | float):
        return value
    text = str(value)
    if escaped_length(text) <= limit:
        return text
    budget = limit - len(ELLIPSIS)
    used = 0
    for index, char in enumerate(text):
        used += escaped_length(char)
        if used > budget:
            return text[:index] + ELLIPSIS
    return text  # unreachable: the whole text fitted


def rendered(value: object) -> Trusted:
    """Output of a macro of the same template: already escaped and JSON-safe, placed as is."""
    return Trusted(str(value))


FILTERS: dict[str, Callable[..., Any]] = {
    "rendered": rendered,
    "mention": mention,
    "channel_link": channel_link,
    "plain": plain,
    "clip": clip,
}


def make_environment() -> jinja2.Environment:
    """The one Environment; built on demand so importing this module builds nothing."""
    folder = resources.files(TEMPLATE_PACKAGE)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # jinja's escaping is HTML's; slack_text does Slack's
        finalize=slack_text,
        keep_trailing_newline=False,
    )
    env.filters.update(FILTERS)
    env.globals.update({"mention": mention, "channel_link": channel_link})
    return env


# --- rendering ----------------------------------------------------------------------------


def clip_escaped(text: str, limit: int) -> str:
    """Shorten already-escaped text without leaving half an `&amp;` or `<@U1` behind."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    amp, semi = cut.rfind("&"), cut.rfind(";")
    if amp > semi:
        cut = cut[:amp]
    opening, closing = cut.rfind("<"), cut.rfind(">")
    if opening > closing:
        cut = cut[:opening]
    return cut + ELLIPSIS


class Renderer:
    """Renders `templates/*.json.j2` into Slack messages.

    `globals` (for example `ids`, the action-id constants) are visible in every template
    without touching the shared Environment.
    """

    def __init__(self, env: jinja2.Environment | None = None, **globals: Any) -> None:
        self.env = env if env is not None else make_environment()
        self.globals = globals

    def message(self, name: str, /, **values: Any) -> dict[str, Any]:
        """`{"text": fallback, "blocks": [...]}`, ready for chat.postMessage or respond."""
        rendered = self.env.get_template(name).render({**self.globals, **values})
        try:
            message = json.loads(rendered)
        except json.JSONDecodeError as error:
            raise ValueError(f"template {name} did not render JSON: {error}") from error
        if not isinstance(message, dict) or not isinstance(message.get("blocks"), list):
            raise ValueError(f'template {name} must render {{"text": ..., "blocks": [...]}}')
        message["text"] = clip_escaped(str(message.get("text", "")), FALLBACK_LIMIT)
        return message

    def blocks(self, name: str, /, **values: Any) -> list[dict[str, Any]]:
        return self.message(name, **values)["blocks"]


# --- terminal text for `kpibot ask` -------------------------------------------------------

_CODE_BLOCK = re.compile(r"```\n?(.*?)\n?```", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_ANGLE = re.compile(r"<([^<>]+)>")
_EMOJI = re.compile(
    r"(?<!\S):[a-z][a-z0-9_+-]*:(?:[ \t]+|$)", re.MULTILINE
)  # ":warning: " at a word's edge
_EMPHASIS = [
    re.compile(rf"(?<![\w{mark}]){mark}(?=\S)([^{mark}\n]+?)(?<=\S){mark}(?![\w{mark}])")
    for mark in (r"\*", "_", "~")
]
DIVIDER = "─" * 32


def _angle_to_text(match: re.Match[str]) -> str:
    """`<@U1>` → @U1, `<#C1|fin>` → #fin, `<!here>` → @here, `<url|label>` → label."""
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return "@" + (label or target[1:])
    if target.startswith("#"):
        return "#" + (label or target[1:])
    if target.startswith("!"):
        if label:
            return label
        return "@" + target[1:].split("^")[0]
    return label or target


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _inline_to_text(text: str) -> str:
    """mrkdwn outside code blocks; inline code keeps its content verbatim."""
    parts = _INLINE_CODE.split(text)
    out = []
    for index, part in enumerate(parts):
        if index % 2 == 0:  # prose: links, mentions, emphasis
            part = _EMOJI.sub("", _ANGLE.sub(_angle_to_text, part))
            for pattern in _EMPHASIS:
                part = pattern.sub(r"\1", part)
        out.append(_unescape(part))
    return "".join(out)


def mrkdwn_to_text(text: str) -> str:
    """One mrkdwn string → terminal text; code blocks (our tables) keep their alignment."""
    pieces = _CODE_BLOCK.split(text)
    return "".join(
        _unescape(piece) if index % 2 else _inline_to_text(piece)
        for index, piece in enumerate(pieces)
    )


def _text_of(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    if obj.get("type") == "mrkdwn":
        return mrkdwn_to_text(str(obj.get("text", "")))
    return _EMOJI.sub("", _unescape(str(obj.get("text", ""))))


def _field_line(field: dict[str, Any]) -> str:
    """A field is usually "*Label*\\nvalue"; on one line that reads "Label: value"."""
    lines = [line for line in _text_of(field).splitlines() if line.strip()]
    if len(lines) == 2 and not lines[0].endswith(":"):
        return f"{lines[0]}: {lines[1]}"
    return " ".join(lines)


def _table_lines(rows: list[list[Any]]) -> list[str]:
    cells = [[_cell_text(cell) for cell in row] for row in rows]
    widths = [
        max(len(row[i]) for row in cells if i < len(row)) for i in range(max(map(len, cells)))
    ]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells
    ]


def _cell_text(cell: Any) -> str:
    if isinstance(cell, dict) and "text" in cell:
        return _text_of(cell)
    if isinstance(cell, dict) and cell.get("type") == "rich_text":
        return " ".join(_rich_text_lines(cell))
    return str(cell)


def _rich_text_lines(block: dict[str, Any]) -> list[str]:
    lines = []
    for element in block.get("elements", []):
        text = "".join(
            str(part.get("text") or part.get("name") or part.get("user_id") or part.get("url", ""))
            for part in element.get("elements", [])
        )
        lines.extend(text.splitlines() or [""])
    return lines


def _block_lines(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        title = _text_of(block.get("text"))
        return [title, "=" * len(title)]
    if kind == "section":
        lines = _text_of(block.get("text")).splitlines() if block.get("text") else []
        lines += [_field_line(field) for field in block.get("fields", [])]
        return lines
    if kind == "context":
        texts = [_text_of(element) for element in block.get("elements", [])]
        return ["  ".join(text for text in texts if text)]
    if kind == "divider":
        return [DIVIDER]
    if kind == "image":
        return [f"[image: {_text_of(block.get('title')) or block.get('alt_text', '')}]"]
    if kind == "markdown":
        return str(block.get("text", "")).splitlines()
    if kind == "rich_text":
        return _rich_text_lines(block)
    if kind == "table":
        return _table_lines(block.get("rows", []))
    return []  # actions, inputs, files: nothing a terminal can click


def plain_text(message: dict[str, Any]) -> str:
    """A rendered message as readable terminal text (what `kpibot ask` prints)."""
    blocks: Iterable[dict[str, Any]] = message.get("blocks") or []
    chunks = ["\n".join(_block_lines(block)) for block in blocks]
    chunks = [chunk for chunk in chunks if chunk.strip()]
    if not chunks:
        return mrkdwn_to_text(str(message.get("text", "")))
    return "\n\n".join(chunks)
