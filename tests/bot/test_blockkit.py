import pytest

from bot.blockkit import BlockKitProblem, inert, live_tokens, problems, validate


def mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def plain(text: str) -> dict:
    return {"type": "plain_text", "text": text}


def section(text: str = "hi", **extra) -> dict:
    return {"type": "section", "text": mrkdwn(text), **extra}


def button(action_id: str = "ack", text: str = "Acknowledge", value: str = "1") -> dict:
    return {"type": "button", "action_id": action_id, "text": plain(text), "value": value}


GOOD = {
    "section": [section("*DSO* 42 days")],
    "section at 3000": [section("x" * 3000)],
    "header at 150": [{"type": "header", "text": plain("h" * 150)}],
    "fields": [{"type": "section", "fields": [mrkdwn("*Target*\n45")] * 10}],
    "accessory": [section(accessory=button())],
    "context": [{"type": "context", "elements": [mrkdwn("as of today")] * 10}],
    "actions": [
        {
            "type": "actions",
            "block_id": "alert",
            "elements": [button("ack"), button("snooze", "Snooze", "1d"), button("own", "Own")],
        }
    ],
    "divider and image": [
        {"type": "divider"},
        {"type": "image", "image_url": "https://x.test/c.png", "alt_text": "trend"},
    ],
    "50 blocks": [{"type": "divider"}] * 50,
    "button value at 2000": [{"type": "actions", "elements": [button(value="v" * 2000)]}],
}

BAD = {
    "not a list": ({"type": "divider"}, "must be a list"),
    "not an object": (["divider"], "must be an object"),
    "unknown type": ([{"type": "sektion", "text": mrkdwn("x")}], "unknown block type 'sektion'"),
    "no type": ([{"text": mrkdwn("x")}], "unknown block type None"),
    "misspelt key": ([{"type": "section", "txt": mrkdwn("x")}], "blocks[0].txt: unknown key"),
    "extra key": ([section(colour="red")], "blocks[0].colour: unknown key"),
    "nested misspelt key": (
        [{"type": "actions", "elements": [{**button(), "valeu": "1"}]}],
        "blocks[0].elements[0].valeu: unknown key",
    ),
    "empty text": ([section("")], "blocks[0].text.text: must not be empty"),
    "section too long": ([section("x" * 3001)], "3000"),
    "header too long": ([{"type": "header", "text": plain("h" * 151)}], "150"),
    "header in mrkdwn": ([{"type": "header", "text": mrkdwn("h")}], "must be plain_text"),
    "11 fields": ([{"type": "section", "fields": [mrkdwn("f")] * 11}], "10"),
    "field too long": ([{"type": "section", "fields": [mrkdwn("f" * 2001)]}], "2000"),
    "11 context elements": ([{"type": "context", "elements": [mrkdwn("c")] * 11}], "10"),
    "26 actions": (
        [{"type": "actions", "elements": [button(f"a{i}") for i in range(26)]}],
        "25",
    ),
    "51 blocks": ([{"type": "divider"}] * 51, "51 blocks, more than 50"),
    "block_id too long": ([{"type": "divider", "block_id": "b" * 256}], "255"),
    "block_id twice": (
        [{"type": "divider", "block_id": "b"}, {"type": "divider", "block_id": "b"}],
        "block_id 'b' is used more than once",
    ),
    "action_id twice": (
        [section(accessory=button("ack")), {"type": "actions", "elements": [button("ack")]}],
        "action_id 'ack' is used more than once",
    ),
    "button text too long": ([{"type": "actions", "elements": [button(text="b" * 76)]}], "75"),
    "button value too long": (
        [{"type": "actions", "elements": [button(value="v" * 2001)]}],
        "2000",
    ),
    "image without alt text": ([{"type": "image", "image_url": "https://x.test/c.png"}], "alt"),
    "text not an object": ([{"type": "section", "text": "hi"}], "blocks[0].text"),
}


@pytest.mark.parametrize("blocks", GOOD.values(), ids=GOOD.keys())
def test_good_blocks_have_no_problems(blocks):
    assert problems(blocks) == []
    validate(blocks, text="fallback")


@pytest.mark.parametrize(("blocks", "expected"), BAD.values(), ids=BAD.keys())
def test_bad_blocks_are_named(blocks, expected):
    found = problems(blocks)
    assert any(expected in problem for problem in found), found
    with pytest.raises(BlockKitProblem) as raised:
        validate(blocks)
    assert raised.value.problems == found


@pytest.mark.parametrize(
    ("text", "ok"),
    [("x" * 4000, True), ("x" * 4001, False), (None, True)],
)
def test_fallback_text_limit(text, ok):
    assert (problems([section()], text=text) == []) is ok


@pytest.mark.parametrize(
    ("rendered", "expected", "is_inert"),
    [
        ('{"text": "&lt;!channel&gt; &amp; &lt;@U1&gt;"}', (), True),
        ('{"text": "<!channel>"}', (), False),
        ('{"text": "<!here|here>"}', (), False),
        ('{"text": "<!everyone>"}', (), False),
        ('{"text": "<!subteam^S123|@hr>"}', (), False),
        ('{"text": "\\u003c!here\\u003e"}', (), False),  # JSON escapes are decoded first
        ('{"text": "owner <@U0123CFO>"}', ("<@U0123CFO>",), True),
        ('{"text": "owner <@U0123CFO> <@U9>"}', ("<@U0123CFO>",), False),
        ('{"text": "see <#C0123FIN>"}', (), False),
        ('{"text": "<https://x.test|a link>"}', (), True),
        ("not json <!here>", (), False),
    ],
)
def test_inert(rendered, expected, is_inert):
    assert inert(rendered, expected=expected) is is_inert


def test_live_tokens_reads_nested_messages():
    message = {"blocks": [section("hi <@U1>", accessory=button(text="<!here>"))]}
    assert live_tokens(message) == ["<@U1>", "<!here>"]
