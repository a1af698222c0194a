import json

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from bot.blockkit import inert, live_tokens, validate
from bot.render import (
    FALLBACK_LIMIT,
    Renderer,
    Trusted,
    channel_link,
    clip,
    escaped_length,
    make_environment,
    mention,
    plain_text,
    slack_text,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("R&D", "R&amp;D"),
        ("a < b > c", "a &lt; b &gt; c"),
        ("&lt;", "&amp;lt;"),  # already-escaped user text is shown as typed
        ('say "hi"', 'say \\"hi\\"'),
        ("C:\\temp", "C:\\\\temp"),
        ("two\nlines\ttab", "two\\nlines\\ttab"),
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U123>", "&lt;@U123&gt;"),
        ("Zürich ✓ 📈", "Zürich ✓ 📈"),
        (Trusted("<@U123>"), "<@U123>"),
        (42, "42"),
        (-1.5, "-1.5"),
        (True, "true"),
        (False, "false"),
    ],
)
def test_slack_text_escapes_for_slack_and_json(value, expected):
    assert slack_text(value) == expected


@pytest.mark.parametrize("value", [None, float("nan"), float("inf")])
def test_slack_text_refuses_unformatted_values(value):
    with pytest.raises(ValueError, match="format values before rendering"):
        slack_text(value)


def _render_string(source: str, **values) -> str:
    return make_environment().from_string(source).render(**values)


@given(st.text())
def test_any_text_lands_in_json_as_inert_escaped_text(text):
    decoded = json.loads(_render_string('{"t": "{{ v }}"}', v=text))["t"]
    assert "<" not in decoded and ">" not in decoded
    assert decoded.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == text


@pytest.mark.parametrize(
    ("helper", "value", "expected"),
    [
        (mention, "U0123ABC", "<@U0123ABC>"),
        (mention, "W0123", "<@W0123>"),
        (mention, "U01>|<!here", "U01&gt;|&lt;!here"),
        (mention, "here", "here"),
        (channel_link, "C0123FIN", "<#C0123FIN>"),
        (channel_link, "#general", "#general"),
    ],
)
def test_mentions_are_live_only_for_real_ids(helper, value, expected):
    source = '{"t": "{{ v | ' + helper.__name__ + ' }}"}'
    assert json.loads(_render_string(source, v=value))["t"] == expected


def test_plain_filter_keeps_values_byte_for_byte_but_json_safe():
    rendered = _render_string('{"value": "{{ v | plain }}"}', v='R&D "x" <y>')
    assert json.loads(rendered)["value"] == 'R&D "x" <y>'


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("abcdefghijk", 10, "abcdefghi…"),
        ("<<<<", 10, "<<…"),  # each < counts as &lt;: 2×4 + 1 ≤ 10
        ("a&b&c", 9, "a&b…"),  # a &amp; b … is 8
        (Trusted("<@U1>"), 2, "<@U1>"),
        (12345, 2, 12345),
    ],
)
def test_clip_counts_escaped_length(text, limit, expected):
    clipped = clip(text, limit)
    assert clipped == expected
    if isinstance(clipped, str) and not isinstance(clipped, Trusted):
        assert escaped_length(clipped) <= limit


def test_missing_values_fail_loudly(renderer):
    with pytest.raises(jinja2.UndefinedError):
        renderer.message("error.json.j2")
    with pytest.raises(jinja2.UndefinedError):
        renderer.message("help.json.j2")


def _assert_valid_message(message: dict) -> None:
    """What STYLE asks of every template: JSON, known blocks, round trip, limits."""
    json.loads(json.dumps(message))
    assert None not in Block.parse_all(message["blocks"])
    validate(message["blocks"], text=message["text"])
    assert message["text"]


@pytest.mark.parametrize("areas", [["Finance", "HR", "IT", "Back office"], []])
def test_help_renders_valid_block_kit(renderer, areas):
    message = renderer.message("help.json.j2", areas=areas)
    _assert_valid_message(message)
    assert inert(json.dumps(message))
    text = plain_text(message)
    for heading in ("Ask", "Trends", "Digests & alerts", "Admin", "/kpi dso"):
        assert heading in text
    assert "Finance · HR · IT · Back office" in text if areas else "none yet" in text


def test_help_keeps_a_hostile_area_name_inert(renderer):
    message = renderer.message("help.json.j2", areas=["<!channel> & <@U1>"])
    _assert_valid_message(message)
    assert inert(json.dumps(message))
    assert "&lt;!channel&gt; &amp; &lt;@U1&gt;" in json.dumps(message, ensure_ascii=False)


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ({"message": "I don't know `dsx`."}, ["I don't know"]),
        ({"message": "No KPI dsx.", "example": "/kpi dso"}, ["No KPI dsx.", "Try /kpi dso"]),
        ({"message": "No KPI dsx.", "example": None}, ["No KPI dsx."]),
        ({"message": 'Quote " and \\ backslash'}, ['Quote " and \\ backslash']),
    ],
)
def test_error_renders_valid_block_kit(renderer, values, shown):
    message = renderer.message("error.json.j2", **values)
    _assert_valid_message(message)
    text = plain_text(message)
    for part in shown:
        assert part in text


def test_error_with_a_hostile_message_is_valid_and_inert(renderer):
    hostile = ("<!here> & <!channel> <@U0BOSS> " * 100)[:3000]
    message = renderer.message("error.json.j2", message=hostile, example="<!everyone>" * 50)
    _assert_valid_message(message)
    assert live_tokens(message) == []
    assert len(message["text"]) <= FALLBACK_LIMIT
    assert message["blocks"][0]["text"]["text"].endswith("…`")


def test_renderer_globals_and_fallback_limit():
    env = make_environment()
    env.loader = jinja2.DictLoader(
        {
            "button.json.j2": (
                '{"text": "{{ long }}", "blocks": [{"type": "actions", "elements": ['
                '{"type": "button", "action_id": "{{ ids.ACK | plain }}",'
                ' "text": {"type": "plain_text", "text": "Ack"},'
                ' "value": "{{ value | plain }}"}]}]}'
            ),
            "broken.json.j2": '{"text": "x", "blocks": [}',
        }
    )
    ids = type("Ids", (), {"ACK": "alert_ack"})
    renderer = Renderer(env, ids=ids)
    message = renderer.message("button.json.j2", long="&" * 5000, value="dso|R&D")
    button = message["blocks"][0]["elements"][0]
    assert button["action_id"] == "alert_ack"
    assert button["value"] == "dso|R&D"  # comes back to the handler unchanged
    assert len(message["text"]) <= FALLBACK_LIMIT
    assert message["text"].endswith("&amp;…")  # never half an entity
    assert renderer.blocks("button.json.j2", long="x", value="dso|R&D") == message["blocks"]
    with pytest.raises(ValueError, match="broken.json.j2"):
        renderer.message("broken.json.j2")


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        (
            [{"type": "header", "text": {"type": "plain_text", "text": ":chart: DSO"}}],
            "DSO\n===",
        ),
        (
            [{"type": "section", "text": {"type": "mrkdwn", "text": "*42 days* is _good_ ~x~"}}],
            "42 days is good x",
        ),
        (
            [{"type": "section", "text": {"type": "mrkdwn", "text": "a &lt;b&gt; &amp;amp; c"}}],
            "a <b> &amp; c",
        ),
        (
            [{"type": "section", "text": {"type": "mrkdwn", "text": "ask <@U1>, <@U2|ann>"}}],
            "ask @U1, @ann",
        ),
        (
            [{"type": "section", "text": {"type": "mrkdwn", "text": "<https://x.io|docs> <#C1>"}}],
            "docs #C1",
        ),
        (
            [
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": "keep employee_turnover_rate"},
                }
            ],
            "keep employee_turnover_rate",
        ),
        (
            [{"type": "section", "text": {"type": "mrkdwn", "text": "run `kpibot *ask*`"}}],
            "run kpibot *ask*",
        ),
        (
            [
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": "```KPI    value\n*dso*   42 d\nuptime 99.9 %```",
                    },
                }
            ],
            "KPI    value\n*dso*   42 d\nuptime 99.9 %",
        ),
        (
            [
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": "*Target*\n45 days"},
                        {"type": "mrkdwn", "text": "*Status:*\non target"},
                    ],
                }
            ],
            "Target: 45 days\nStatus: on target",
        ),
        (
            [
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "as of 2026-11-02"}]},
                {"type": "divider"},
                {
                    "type": "actions",
                    "elements": [
                        {"type": "button", "text": {"type": "plain_text", "text": "Share"}}
                    ],
                },
                {"type": "image", "image_url": "https://x/c.png", "alt_text": "DSO trend"},
            ],
            "as of 2026-11-02\n\n" + "─" * 32 + "\n\n[image: DSO trend]",
        ),
        ([], "fallback &amp; only"),
    ],
)
def test_plain_text(blocks, expected):
    assert plain_text({"text": "fallback &amp;amp; only", "blocks": blocks}) == expected


def test_plain_text_of_help_keeps_commands_readable(renderer):
    text = plain_text(renderer.message("help.json.j2", areas=["Finance"]))
    assert "`" not in text and "*" not in text and ":bar_chart:" not in text
    assert "/kpi trend dso 12w" in text
