"""Every message template renders valid Block Kit with ordinary and worst-case values."""

import json

import pytest

from bot import ids
from bot.blockkit import inert, validate
from bot.render import Renderer
from kpi.views import Line, table

HOSTILE = "<!channel> & <@U999> <!here> *bold* " + "x" * 3000


def answer(**overrides):
    base = {
        "key": "dso",
        "name": "Days Sales Outstanding",
        "area": "Finance",
        "description": "How many days of credit sales are still unpaid.",
        "period": "October 2026",
        "scope": "",
        "value": "42.3 days",
        "status": "on_target",
        "emoji": ":large_green_circle:",
        "status_word": "on target",
        "target": "target 45.0 days · off target above 55.0 days · by 30 Jun 2027",
        "change": "▼ −2.1 days (−4.73 %) vs September 2026 · better",
        "how": "ar balance €400,000 ÷ credit sales €200,000 × 31 days",
        "reason": None,
    }
    return base | overrides


def hostile_answer():
    return {key: HOSTILE if isinstance(value, str) else value for key, value in answer().items()}


def breakdown(rows: int, label: str = "Berlin"):
    lines = [Line(f"{label} {i}", "42.3 days", "on target", "▼ −2.1 days") for i in range(rows)]
    chunks, more = table(lines)
    return answer() | {"by": "branch", "chunks": chunks, "more": more, "summary": "3 on target",
                       "previous": "September 2026"}  # fmt: skip


def list_areas(kpis: int, name: str = "Days Sales Outstanding"):
    kpi = {"key": "dso", "name": name, "value": "42.3 days", "period": "October 2026",
           "change": "▼ −2.1 days", "emoji": ":red_circle:",
           "status_word": "off target"}  # fmt: skip
    return [{"name": f"Area {a}", "kpis": [kpi] * kpis} for a in range(30)]


def trend_view(points: int, starts: str | None) -> dict:
    """A trend of 12 periods, `points` of them with data; `starts` when one was left out."""
    return answer() | {
        "latest": "42.3 days",
        "low": "40.0 days",
        "high": "50.1 days",
        "points": points,
        "buckets": 12,
        "starts": starts,
    }


CASES = {
    "answer": ("answer.json.j2", {"a": answer()}),
    "answer no data": (
        "answer.json.j2",
        {"a": answer(value="—", target=None, change=None, how=None, reason="no data for x")},
    ),
    "answer shared": ("answer.json.j2", {"a": answer(), "share": json.dumps({"t": "dso & co"})}),
    "answer hostile": ("answer.json.j2", {"a": hostile_answer(), "share": HOSTILE[:1900]}),
    "breakdown": ("breakdown.json.j2", {"a": breakdown(3)}),
    "breakdown 60 values": ("breakdown.json.j2", {"a": breakdown(60)}),
    "breakdown 400 long values": ("breakdown.json.j2", {"a": breakdown(400, HOSTILE)}),
    "breakdown empty": ("breakdown.json.j2", {"a": breakdown(0)}),
    "trend": ("trend.json.j2", {"a": trend_view(points=12, starts=None)}),
    "trend with a late start": (
        "trend.json.j2",
        {"a": trend_view(points=11, starts="20 Sep 2026")},
    ),
    "list": ("list.json.j2", {"areas": list_areas(3)}),
    "list worst case": ("list.json.j2", {"areas": list_areas(40, HOSTILE)}),
    "help": ("help.json.j2", {"areas": ["Finance", "HR", "IT", "Back office"]}),
    "error": ("error.json.j2", {"message": HOSTILE, "example": "/kpi dso"}),
    "recorded": (
        "recorded.json.j2",
        {
            "measure": "credit_sales",
            "value": "€100",
            "day": "20 Oct 2026",
            "dims": "branch=Madrid",
            "changed": 1,
            "replaced": False,
            "new_values": [],
        },
    ),  # fmt: skip
    "recorded new values": (
        "recorded.json.j2",
        {
            "measure": HOSTILE,
            "value": HOSTILE,
            "day": "20 Oct 2026",
            "dims": HOSTILE,
            "changed": 1,
            "replaced": True,
            "new_values": [HOSTILE] * 12,
        },
    ),  # fmt: skip
    "target set": (
        "target_set.json.j2",
        {
            "name": "DSO",
            "key": "dso",
            "before": "target 45",
            "after": "target 40",
            "user": "U1",
            "dropped": None,
            "past_due": None,
        },
    ),
    "target set dropping its band": (
        "target_set.json.j2",
        {
            "name": HOSTILE,
            "key": HOSTILE,
            "before": HOSTILE,
            "after": HOSTILE,
            "user": "U1",
            "dropped": HOSTILE,
            "past_due": "1 Jan 2020",
        },
    ),  # fmt: skip
    **{
        f"subscribed {how}": (
            "subscribed.json.j2",
            {
                "created": how == "created",
                "changes": [  # the fields are ours, what they hold is not
                    {"field": f, "before": HOSTILE, "after": HOSTILE}
                    for f in ("items", "when", "tz")
                ],
                "resumed": HOSTILE if how == "resumed" else "",
                "channel": "C0FIN",
                "items": HOSTILE,
                "when": "Mondays at 09:00",
                "tz": HOSTILE,
            },
        )
        for how in ("created", "changed", "resumed")
    },
} | {
    f"notice {kind}": ("notice.json.j2", {"kind": kind, "channel": "C0FIN", "error": HOSTILE})
    for kind in (
        "share_refused",
        "share_not_answer",
        "invite",
        "invite_digest",
        "shared",
        "share_failed",
        "digest_paused",
        "alert_refused",
        "alert_closed",
        "alert_unchanged",
        "button_unknown",
        "alert_done",
        "alert_done_not_shown",
        HOSTILE,  # any other kind is shown as it is
    )
}


@pytest.mark.parametrize("case", CASES)
def test_template_renders_valid_block_kit(case):
    name, values = CASES[case]
    message = Renderer(ids=ids).message(name, **values)
    validate(message["blocks"], text=message["text"])
    # Who acted and a notice's channel are linked by us; nothing the user wrote is.
    assert inert(json.dumps(shown(message)), expected={"<#C0FIN>", "<@U1>"})


def shown(message: dict) -> dict:
    """The message without button values, which Slack hands back to us but never displays."""
    text = json.dumps(message)
    for block in message["blocks"]:
        for element in block.get("elements", []):
            if element.get("type") == "button":
                text = text.replace(json.dumps(element["value"])[1:-1], "")
    return json.loads(text)


def test_a_breakdown_too_large_for_one_message_says_how_many_are_left_out():
    message = Renderer(ids=ids).message("breakdown.json.j2", a=breakdown(130))
    assert "… and 30 more" in json.dumps(message, ensure_ascii=False)


def test_user_text_cannot_mention_anyone():
    message = Renderer(ids=ids).message("answer.json.j2", a=answer(scope="<!channel> <@U1>"))
    text = json.dumps(message)
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text and "<@U1>" not in text
