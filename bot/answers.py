"""Turning a `kpi.service.Reply` into a Slack message and, for trends, a chart."""

import json
from datetime import datetime

from bot import ids
from bot.render import Renderer
from kpi.errors import KpibotError
from kpi.service import Reply

UNEXPECTED = "Something went wrong on our side; it has been logged. Please try again."
_renderer: Renderer | None = None


def renderer() -> Renderer:
    """One Renderer per process, built on first use (templates are parsed once)."""
    global _renderer
    if _renderer is None:
        _renderer = Renderer(ids=ids)
    return _renderer


JSON_HEADERS = {"content-type": "application/json;charset=utf-8"}


def ephemeral_body(message: dict) -> str:
    """A slash command's HTTP reply: the message, shown to the asker alone."""
    return json.dumps({"response_type": "ephemeral", **message})


def render_reply(reply: Reply, **extra: object) -> dict:
    """The reply as a message. Replies are cached per store generation; so are their renderings,
    which saves a template render and a JSON parse on every repeated question."""
    key = tuple(sorted((k, str(v)) for k, v in extra.items()))
    rendered = reply.extra.setdefault("rendered", {})
    if key not in rendered:
        rendered[key] = renderer().message(reply.template, **reply.values, **extra)
    return dict(rendered[key])  # callers pass it on to Slack; none of them changes it


def chart_png(reply: Reply) -> bytes:
    from bot.charts import TrendChart, trend_png  # matplotlib is heavy: only when drawing

    points = reply.trend or []
    chart = TrendChart(
        title=reply.extra["title"],
        unit=reply.extra["unit"],
        labels=[_short(p["period"]) for p in points],
        values=[p["value"] for p in points],
        target=reply.extra["target"],
        warn=reply.extra["warn"],
        better=reply.extra["better"],
    )
    return trend_png(chart)


def _short(period) -> str:
    """Axis labels: `Oct 26`, `W44`, `Q3 26`, `5 Oct`."""
    start = period.start
    if period.grain == "month":
        return start.strftime("%b %y")
    if period.grain == "week":
        return f"W{start.isocalendar().week}"
    if period.grain == "quarter":
        return f"Q{(start.month - 1) // 3 + 1} {start:%y}"
    if period.grain == "year":
        return str(start.year)
    return f"{start.day} {start:%b}"


SHARE_VALUE_LIMIT = 2000


def share_value(reply: Reply, text: str, as_of: datetime) -> str | None:
    """The Share button carries the question and its moment, so the post is the same answer."""
    if reply.kpi is None:
        return None
    # Periods are made of local dates, so the day's start gives the same answer all day long
    # (and the same button, so the rendered answer can be reused).
    day = as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    value = json.dumps({"text": text, "as_of": day.isoformat()}, ensure_ascii=False)
    return value if len(value) <= SHARE_VALUE_LIMIT else None


def read_share_value(value: str) -> tuple[str, datetime]:
    data = json.loads(value)
    return str(data["text"]), datetime.fromisoformat(data["as_of"])


def error_message(error: Exception) -> dict:
    """A typed error's own words; anything else a short apology (the details go to the log)."""
    if isinstance(error, KpibotError):
        return renderer().message("error.json.j2", message=str(error), example=error.example)
    return renderer().message("error.json.j2", message=UNEXPECTED, example=None)
