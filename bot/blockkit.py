"""Block Kit validation: what Slack would reject, found before Slack sees it.

Used by template tests and by the Slack stand-in (which answers `invalid_blocks` like
Slack does). slack_sdk's models do most of the work: `Block.parse` returns None for an
unknown type, and silently drops keys it does not know, so a round trip through
`to_dict()` that differs from the input means a misspelt or unsupported key. On top of
that we check the limits Slack enforces that the models do not.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Collection, Iterator
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

MAX_BLOCKS = 50
MAX_FALLBACK_TEXT = 4000  # ours; Slack truncates at 40 000
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_ID = 255  # block_id and action_id
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000

# Parsing hands user data to slack_sdk constructors; these are the ways they fail on it.
_PARSE_ERRORS = (SlackObjectFormationError, TypeError, ValueError, AttributeError, KeyError)


class BlockKitProblem(ValueError):
    """Blocks Slack would refuse; `problems` lists why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid blocks: " + "; ".join(problems))
        self.problems = problems


def problems(blocks: Any, *, text: str | None = None) -> list[str]:
    """Every reason Slack would reject this message; an empty list means valid."""
    found: list[str] = []
    if text is not None and len(text) > MAX_FALLBACK_TEXT:
        found.append(f"text: {len(text)} characters, more than {MAX_FALLBACK_TEXT}")
    if not isinstance(blocks, list):
        return [*found, f"blocks: must be a list, not {type(blocks).__name__}"]
    if len(blocks) > MAX_BLOCKS:
        found.append(f"blocks: {len(blocks)} blocks, more than {MAX_BLOCKS}")
    for index, block in enumerate(blocks):
        found.extend(_block_problems(block, f"blocks[{index}]"))
    found.extend(_duplicates("block_id", _block_ids(blocks)))
    found.extend(_duplicates("action_id", _action_ids(blocks)))
    return found


def validate(blocks: Any, *, text: str | None = None) -> None:
    found = problems(blocks, text=text)
    if found:
        raise BlockKitProblem(found)


# --- one block ----------------------------------------------------------------------------


def _block_problems(block: Any, path: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"{path}: must be an object, not {type(block).__name__}"]
    try:
        parsed = Block.parse(block)
        if parsed is None:
            return [f"{path}: unknown block type {block.get('type')!r}"]
        parsed.validate_json()
        round_trip = parsed.to_dict()
    except _PARSE_ERRORS as error:
        # The model could not even be built; a misspelt key is the usual reason, name it.
        return [f"{path}: {error}", *_unknown_keys(block, path)]
    found = list(_differences(block, round_trip, path))
    found.extend(_limit_problems(block, path))
    return found


def _block_classes() -> dict[str, type[Block]]:
    """Block type name → slack_sdk class, found by walking Block's subclasses."""
    classes: dict[str, type[Block]] = {}
    pending = list(Block.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if isinstance(getattr(cls, "type", None), str):
            classes.setdefault(cls.type, cls)
    return classes


def _unknown_keys(block: dict[str, Any], path: str) -> list[str]:
    cls = _block_classes().get(block.get("type"))
    if cls is None:
        return []
    accepted = set(inspect.signature(cls.__init__).parameters) | {"type"}
    return [f"{path}.{key}: unknown key" for key in block if key not in accepted]


def _differences(given: Any, parsed: Any, path: str) -> Iterator[str]:
    """Where the round trip lost or changed something: the key path and what happened."""
    if isinstance(given, dict) and isinstance(parsed, dict):
        for key in given:
            if key not in parsed and given[key] in ("", [], {}):
                yield f"{path}.{key}: must not be empty"
            elif key not in parsed:
                yield f"{path}.{key}: unknown key"
            else:
                yield from _differences(given[key], parsed[key], f"{path}.{key}")
        for key in parsed.keys() - given.keys():
            yield f"{path}.{key}: missing (slack_sdk added it)"
    elif isinstance(given, list) and isinstance(parsed, list):
        if len(given) != len(parsed):
            yield f"{path}: {len(given)} items became {len(parsed)}"
        for index, (left, right) in enumerate(zip(given, parsed, strict=False)):
            yield from _differences(left, right, f"{path}[{index}]")
    elif given != parsed:
        yield f"{path}: {given!r} is not valid here"


def _limit_problems(block: dict[str, Any], path: str) -> Iterator[str]:
    kind = block.get("type")
    block_id = block.get("block_id")
    if isinstance(block_id, str) and not 0 < len(block_id) <= MAX_ID:
        yield f"{path}.block_id: length must be 1 to {MAX_ID}"
    if kind == "section":
        yield from _text_problems(block.get("text"), f"{path}.text", MAX_SECTION_TEXT)
        fields = block.get("fields") or []
        if len(fields) > MAX_FIELDS:
            yield f"{path}.fields: {len(fields)} fields, more than {MAX_FIELDS}"
        for index, field in enumerate(fields):
            yield from _text_problems(field, f"{path}.fields[{index}]", MAX_FIELD_TEXT)
        if block.get("accessory") is not None:
            yield from _element_problems(block["accessory"], f"{path}.accessory")
    elif kind == "header":
        yield from _text_problems(block.get("text"), f"{path}.text", MAX_HEADER_TEXT, plain=True)
    elif kind == "context":
        elements = block.get("elements") or []
        if len(elements) > MAX_CONTEXT_ELEMENTS:
            yield f"{path}.elements: {len(elements)} elements, more than {MAX_CONTEXT_ELEMENTS}"
    elif kind == "actions":
        elements = block.get("elements") or []
        if len(elements) > MAX_ACTIONS_ELEMENTS:
            yield f"{path}.elements: {len(elements)} elements, more than {MAX_ACTIONS_ELEMENTS}"
        for index, element in enumerate(elements):
            yield from _element_problems(element, f"{path}.elements[{index}]")


def _text_problems(obj: Any, path: str, limit: int, *, plain: bool = False) -> Iterator[str]:
    if obj is None:
        return
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        yield f"{path}: must be a text object"
        return
    if plain and obj.get("type") != "plain_text":
        yield f"{path}.type: must be plain_text"
    length = len(obj["text"])
    if length > limit:  # empty text is caught by the round trip
        yield f"{path}.text: {length} characters, more than {limit}"


def _element_problems(element: Any, path: str) -> Iterator[str]:
    if not isinstance(element, dict):
        return
    action_id = element.get("action_id")
    if isinstance(action_id, str) and not 0 < len(action_id) <= MAX_ID:
        yield f"{path}.action_id: length must be 1 to {MAX_ID}"
    if element.get("type") != "button":
        return
    yield from _text_problems(element.get("text"), f"{path}.text", MAX_BUTTON_TEXT, plain=True)
    value = element.get("value")
    if isinstance(value, str) and len(value) > MAX_BUTTON_VALUE:
        yield f"{path}.value: {len(value)} characters, more than {MAX_BUTTON_VALUE}"


# --- across blocks ------------------------------------------------------------------------


def _block_ids(blocks: list[Any]) -> Iterator[str]:
    for block in blocks:
        if isinstance(block, dict) and isinstance(block.get("block_id"), str):
            yield block["block_id"]


def _action_ids(blocks: list[Any]) -> Iterator[str]:
    """Action ids of interactive elements: accessories and actions/input elements."""
    for block in blocks:
        if not isinstance(block, dict):
            continue
        elements = [block.get("accessory"), block.get("element"), *(block.get("elements") or [])]
        if block.get("type") == "context":
            elements = []  # images and text only; nothing to click
        for element in elements:
            if isinstance(element, dict) and isinstance(element.get("action_id"), str):
                yield element["action_id"]


def _duplicates(name: str, values: Iterator[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return [f"{name} {value!r} is used more than once" for value in repeated]


# --- mentions that would ping -------------------------------------------------------------

# `<!channel>`, `<!here|here>`, `<!everyone>`, `<!subteam^S1>`, `<@U1>`, `<#C1|general>`
_LIVE_TOKEN = re.compile(r"<(?:![a-z]+(?:\^[^|>]*)?|@[^|>]+|#[^|>]+)(?:\|[^>]*)?>")


def live_tokens(rendered: Any) -> list[str]:
    """Every mention Slack would turn live, in the decoded strings of a rendered message.

    Decoding matters: JSON may spell `<` as `\\u003c`, which Slack reads as `<`.
    """
    if isinstance(rendered, str):
        try:
            rendered = json.loads(rendered)
        except json.JSONDecodeError:
            return _LIVE_TOKEN.findall(rendered)
    return [token for text in _strings(rendered) for token in _LIVE_TOKEN.findall(text)]


def inert(rendered: Any, *, expected: Collection[str] = ()) -> bool:
    """True when nothing in the message would ping anyone, except the `expected` tokens."""
    return all(token in expected for token in live_tokens(rendered))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
