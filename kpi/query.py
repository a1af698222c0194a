"""One parser for the `/kpi` text, shared by Slack and `kpibot ask`.

`parse` turns what someone typed into a typed request, or raises a `KpibotError` whose
message says what went wrong and whose `example` is a command that works. It knows only
the KPIs the asker may see, so a hidden KPI reads exactly like a missing one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, tzinfo
from functools import cache
from typing import Generic, TypeVar
from zoneinfo import available_timezones

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from kpi.errors import PeriodError, QueryError, UnknownKpi
from kpi.periods import (
    MAX_PHRASE_WORDS,
    Period,
    is_period_text,
    is_range_text,
    local_today,
    parse_period,
    parse_range,
)


@dataclass(frozen=True)
class KpiName:
    """What the parser knows of a KPI the asker may see."""

    key: str
    name: str
    aliases: tuple[str, ...] = ()
    cadence: str = "month"


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class ListKpis:
    area: str | None = None


@dataclass(frozen=True)
class Ask:
    kpi: str
    period: Period | None = None  # None: the latest complete period of the KPI's cadence
    by: str | None = None
    filters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Trend:
    kpi: str
    periods: list[Period]


@dataclass(frozen=True)
class SetTarget:
    kpi: str
    target: float
    warn: float | None = None
    due: date | None = None


@dataclass(frozen=True)
class Record:
    measure: str
    value: float
    day: date | None = None
    dims: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Alerts:
    pass


@dataclass(frozen=True)
class Subscribe:
    items: tuple[str, ...] = ()  # area names as given in `areas`, and KPI keys
    weekday: int | None = None  # 0 = Monday
    at: time | None = None
    tz: str | None = None  # a canonical IANA name
    every: bool = False  # `all`: back to every KPI the channel may see


@dataclass(frozen=True)
class Unsubscribe:
    pass


@dataclass(frozen=True)
class DigestPreview:
    pass


Request = (
    Help
    | ListKpis
    | Ask
    | Trend
    | SetTarget
    | Record
    | Alerts
    | Subscribe
    | Unsubscribe
    | DigestPreview
)

FILLER = frozenset("what what's what’s whats is are our the show me please in for of".split())
# Trailing punctuation is dropped from every word ("dso?", "finance,"); leading only
# the Spanish-style marks, so "-5" and ".5" survive.
TRAILING = ".,;:!?"
ECHO_LIMIT = 80
# rapidfuzz WRatio score (0-100) below which a typo gets no "did you mean".
SUGGEST_CUTOFF = 75
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEKDAY_WORDS = (
    {name: number for number, name in enumerate(WEEKDAYS)}
    | {name[:3]: number for number, name in enumerate(WEEKDAYS)}
    | {"tues": 1, "thur": 3, "thurs": 3}
)


def parse(
    text: str,
    *,
    kpis: Sequence[KpiName],
    areas: Sequence[str],
    measures: Sequence[str],
    dimensions: Mapping[str, Collection[str]],
    as_of: datetime,
    tz: tzinfo,
    vocabulary: Vocabulary | None = None,
) -> Request:
    """Read one `/kpi` text; raises QueryError (or UnknownKpi, PeriodError) if it can't.

    Pass a prebuilt `vocabulary` to skip indexing the names (then kpis…dimensions are unused).
    """
    vocabulary = vocabulary or Vocabulary(kpis, areas, measures, dimensions)
    context = _Context(vocabulary, as_of, tz)
    words = _words(text)
    if not words:
        return Help()
    command = _COMMANDS.get(words[0].casefold())
    if command is None and _names_an_area(words, context):
        return _list(words, context)  # `/kpi finance`: the area's KPIs
    if command is None or _names_kpi_beyond_first_word(words, context):
        return _ask(words, context)
    return command(words[1:], context)


def _names_an_area(words: list[str], context: _Context) -> bool:
    found = context.area_names.match(words, 0)
    return found is not None and found[1] == len(words) and not context.kpi_names.match(words, 0)


def _names_kpi_beyond_first_word(words: list[str], context: _Context) -> bool:
    # A KPI such as "Alerts handled" wins over the `alerts` command.
    found = context.kpi_names.match(words, 0)
    return found is not None and found[1] > 1


# --- words and lookups ----------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Split into words, keeping the user's case; a quoted phrase is one word.

    Filler words, trailing punctuation, quote marks and invisible characters (a pasted
    right-to-left mark, a zero-width space) are dropped.
    """
    text = "".join(char for char in text if char.isspace() or char.isprintable())
    text = re.sub(r"\s*=\s*", "=", text.replace("−", "-"))
    words = (_unquote(word).rstrip(TRAILING).lstrip("¿¡") for word in _WORD.findall(text))
    return [word for word in words if word and word.casefold() not in FILLER]


# A run of non-space characters and "quoted phrases"; a stray quote mark on its own.
_WORD = re.compile(r'(?:"[^"]*"|“[^”]*”|[^\s"“”])+|["“”]')


def _unquote(word: str) -> str:
    return " ".join(re.sub(r'["“”]', "", word).split())


def name_phrase(text: str) -> str:
    """The comparable form of a name: case-folded, `_`/`-` as spaces, no filler words."""
    words = (word.rstrip(TRAILING) for word in re.sub(r"[_-]", " ", text.casefold()).split())
    return " ".join(word for word in words if word and word not in FILLER)


def _echo(text: str) -> str:
    """User text quoted back raw (templates escape it), cut to keep messages short."""
    text = " ".join(text.split())
    return text if len(text) <= ECHO_LIMIT else text[: ECHO_LIMIT - 1] + "…"


T = TypeVar("T")


class _Lookup(Generic[T]):
    """Names (KPIs, areas, dimension values…) matched as the longest run of words."""

    def __init__(self, entries: Iterable[tuple[str, T]]) -> None:
        self._by_phrase: dict[str, list[T]] = {}
        for name, value in entries:
            phrase = name_phrase(name)
            if phrase and value not in self._by_phrase.setdefault(phrase, []):
                self._by_phrase[phrase].append(value)
        self._longest = max((len(p.split()) for p in self._by_phrase), default=0)

    def match(self, words: Sequence[str], start: int) -> tuple[list[T], int] | None:
        """The values of the longest run of words from `start` that is a name, and its end."""
        for end in range(min(len(words), start + self._longest), start, -1):
            values = self._by_phrase.get(name_phrase(" ".join(words[start:end])))
            if values:
                return values, end
        return None

    def closest(self, text: str) -> T | None:
        """The value whose name looks most like `text`, if any looks close enough."""
        found = self.closest_scored(text)
        return found[0] if found else None

    def closest_scored(self, text: str) -> tuple[T, float] | None:
        phrase = name_phrase(text)
        if len(phrase) < 2:
            return None  # WRatio rates one letter found anywhere as a 90% match
        names = list(self._by_phrase)
        found = process.extractOne(phrase, names, scorer=fuzz.WRatio, score_cutoff=SUGGEST_CUTOFF)
        if found:
            return self._by_phrase[found[0]][0], found[1]
        if len(phrase) < 3:
            return None
        # Two letters swapped in a short name (`dos`) score low on WRatio but are one edit.
        swapped = process.extractOne(phrase, names, scorer=OSA.distance, score_cutoff=1)
        return (self._by_phrase[swapped[0]][0], SUGGEST_CUTOFF) if swapped else None


class Vocabulary:
    """The names `parse` matches against, indexed once; build one per catalog and reuse it."""

    def __init__(
        self,
        kpis: Sequence[KpiName],
        areas: Sequence[str],
        measures: Sequence[str],
        dimensions: Mapping[str, Collection[str]],
    ) -> None:
        self.kpis = {kpi.key: kpi for kpi in kpis}
        self.kpi_names = _Lookup(
            (name, kpi.key) for kpi in kpis for name in (kpi.key, kpi.name, *kpi.aliases)
        )
        self.areas = list(areas)
        self.area_names = _Lookup((area, area) for area in areas)
        self.measure_names = _Lookup((measure, measure) for measure in measures)
        self.dimensions = dimensions
        self.dimension_names = _Lookup((dim, dim) for dim in dimensions)
        self.values = _Lookup(
            (value, (dim, value)) for dim in dimensions for value in dimensions[dim]
        )


class _Context:
    """A vocabulary and the moment of asking."""

    def __init__(self, vocabulary: Vocabulary, as_of: datetime, tz: tzinfo) -> None:
        self.__dict__.update(vocabulary.__dict__)
        local_today(as_of, tz)  # fail fast on a naive as_of, whatever the text
        self.as_of, self.tz = as_of, tz

    def example_kpi(self) -> str:
        return "dso" if "dso" in self.kpis else next(iter(self.kpis), "dso")

    def ask_example(self, kpi_key: str) -> str:
        dim = next(iter(self.dimensions), None)
        return f"/kpi {kpi_key} last month" + (f" by {dim}" if dim else "")


# --- commands -------------------------------------------------------------------------


def _help(words: list[str], context: _Context) -> Help:
    return Help()


def _list(words: list[str], context: _Context) -> ListKpis:
    words = [w for w in words if w.casefold() not in ("kpi", "kpis", "all")]
    if not words:
        return ListKpis(None)
    found = context.area_names.match(words, 0)
    if found and found[1] == len(words):
        return ListKpis(found[0][0])
    name = " ".join(words)
    suggestion = context.area_names.closest(name)
    hint = f" Did you mean {suggestion}?" if suggestion else ""
    known = ", ".join(context.areas) or "none yet"
    example_area = suggestion or next(iter(context.areas), "")
    raise QueryError(
        f"I don't know an area called “{_echo(name)}”.{hint} Areas: {_echo(known)}.",
        example=f"/kpi list {example_area}".rstrip(),
    )


def _ask(words: list[str], context: _Context) -> Ask | Trend:
    kpi, at = _kpi(words, 0, context)
    rest = _read_rest(words, at, context, example=context.ask_example(kpi.key))
    if rest.range_text is not None:
        if rest.by or rest.filters:
            raise QueryError(
                "A trend covers the whole KPI; drop the `by` and `dim=value` parts.",
                example=f"/kpi trend {kpi.key} 12w",
            )
        return Trend(kpi.key, _range(rest.range_text, kpi, context))
    period = _period(rest.period_text, kpi, context) if rest.period_text else None
    return Ask(kpi.key, period, rest.by, rest.filters)


def _trend(words: list[str], context: _Context) -> Trend:
    if not words:
        raise QueryError(
            "Which KPI? Name it after `trend`.", example=f"/kpi trend {context.example_kpi()} 6m"
        )
    kpi, at = _kpi(words, 0, context)
    example = f"/kpi trend {kpi.key} 6m"
    rest = _read_rest(words, at, context, example=example)
    if rest.by or rest.filters:
        raise QueryError(
            "A trend covers the whole KPI; drop the `by` and `dim=value` parts.", example=example
        )
    # No range at all gives the default one.
    return Trend(kpi.key, _range(rest.range_text or rest.period_text or "", kpi, context))


def _target(words: list[str], context: _Context) -> SetTarget:
    example_key = context.example_kpi()
    if not words:
        raise QueryError(
            "Which KPI, and what target?", example=f"/kpi target {example_key} 45 warn 55"
        )
    kpi, at = _kpi(words, 0, context, stop_at_number=True)
    example = f"/kpi target {kpi.key} 45 warn 55 due 2027-06-30"
    target, at = _number_at(words, at, "the target", example)
    warn: float | None = None
    due: date | None = None
    while at < len(words):
        keyword = words[at].casefold()
        if keyword == "warn" and warn is None:
            warn, at = _number_at(words, at + 1, "the warn value", example)
        elif keyword == "due" and due is None:
            due, at = _due_at(words, at + 1, example)
        else:
            raise QueryError(
                f"I don't understand “{_echo(words[at])}” here; "
                "after the target come `warn <value>` and `due <YYYY-MM-DD>`.",
                example=example,
            )
    return SetTarget(kpi.key, target, warn, due)


def _record(words: list[str], context: _Context) -> Record:
    found = context.measure_names.match(words, 0)
    if found is None:
        raise _unknown_measure(" ".join(_until_number(words)), context)
    measure, at = found[0][0], found[1]
    example = f"/kpi record {measure} 120000 2026-10-05"
    value, at = _number_at(words, at, "the value", example)
    rest = _read_rest(words, at, context, example=example, new_values=True)
    if rest.by or rest.range_text:
        raise QueryError("`record` takes a value, a day and `dim=value` pairs.", example=example)
    day = _record_day(rest.period_text, context, example) if rest.period_text else None
    return Record(measure, value, day, rest.filters)


def _alerts(words: list[str], context: _Context) -> Alerts:
    _nothing_after("alerts", words)
    return Alerts()


def _unsubscribe(words: list[str], context: _Context) -> Unsubscribe:
    _nothing_after("unsubscribe", words)
    return Unsubscribe()


def _digest(words: list[str], context: _Context) -> DigestPreview:
    _nothing_after("digest", [w for w in words if w.casefold() not in ("preview", "now")])
    return DigestPreview()


def _subscribe(words: list[str], context: _Context) -> Subscribe:
    # Commas separate items, and "9 am" is one time.
    text = re.sub(r"(?i)([0-9])\s+([ap]m)\b", r"\1\2", " ".join(words).replace(",", " "))
    words = _words(text)
    items: list[str] = []
    weekday: int | None = None
    at: time | None = None
    zone: str | None = None
    every = False
    index = 0
    while index < len(words):
        word = words[index].casefold()
        kpi = context.kpi_names.match(words, index)
        area = context.area_names.match(words, index)
        if kpi:
            items.append(_only_kpi(kpi[0], words[index : kpi[1]]))
            index = kpi[1]
        elif area:
            items.append(area[0][0])
            index = area[1]
        elif word in ("all", "everything"):  # "all KPIs": every one the channel may see
            every = True
            index += 2 if index + 1 < len(words) and words[index + 1].casefold() in KPI_WORDS else 1
        elif word in ("weekly", "every", "and", "&", "to", "on"):
            index += 1
        elif word in ("daily", "monthly", "hourly"):
            raise QueryError(
                "Digests are weekly; choose the day with `weekly on <day>`.",
                example=SUBSCRIBE_EXAMPLE,
            )
        elif (day := _weekday(word)) is not None:
            _once(weekday, "day", "weekly on friday")
            weekday, index = day, index + 1
        elif word == "at":
            _once(at, "time", "at 09:00")
            at, index = _time_at(words, index + 1)
        elif word in ("tz", "timezone", "zone"):
            _once(zone, "time zone", "tz Europe/Berlin")
            zone, index = _zone_at(words, index + 1)
        elif index and words[index - 1].casefold() == "on":
            raise _unknown_day(words[index])
        else:
            raise _unknown_item(words[index], context)
    if every and items:
        raise QueryError(
            "Name KPIs or areas, or `all` for every KPI this channel may see, not both.",
            example="/kpi subscribe all",
        )
    return Subscribe(tuple(dict.fromkeys(items)), weekday, at, zone, every)


KPI_WORDS = ("kpi", "kpis")


def _once(given: object, what: str, example: str) -> None:
    """A digest has one day, one time and one zone: a second one is a mistake, not an
    update."""
    if given is not None:
        raise QueryError(
            f"Give the {what} once: a digest goes out weekly, on one day at one time.",
            example=f"/kpi subscribe finance {example}",
        )


_COMMANDS = {
    "help": _help,
    "list": _list,
    "trend": _trend,
    "target": _target,
    "record": _record,
    "alerts": _alerts,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "digest": _digest,
}


# --- pieces ---------------------------------------------------------------------------


@dataclass
class _Rest:
    """What follows a KPI: at most one period or range, a `by`, and filters."""

    period_text: str | None = None
    range_text: str | None = None
    by: str | None = None
    filters: dict[str, str] = field(default_factory=dict)


def _kpi(
    words: list[str], start: int, context: _Context, *, stop_at_number: bool = False
) -> tuple[KpiName, int]:
    """The KPI named by the longest run of words from `start`, and where its name ends."""
    found = context.kpi_names.match(words, start)
    if found:
        keys, end = found
        return context.kpis[_only_kpi(keys, words[start:end])], end
    end = start
    while end < len(words) and not _starts_rest(words, end, context, stop_at_number):
        end += 1
    if end == start:
        # What follows reads as a period or a dimension value (`finance eror rate`: a team
        # called Finance), but the whole may still be a misspelt KPI name.
        name = " ".join(words[start:])
        suggestion = _kpi_suggestion(name, context)
        if suggestion:
            raise UnknownKpi(_echo(name), suggestion)
        raise QueryError(
            "Which KPI? Start with its name.", example=f"/kpi {context.example_kpi()} last month"
        )
    name = " ".join(words[start:end])
    raise UnknownKpi(_echo(name), _kpi_suggestion(name, context))


def _only_kpi(keys: list[str], name_words: list[str]) -> str:
    """The one key a name matched; a name shared by two KPIs must be given as a key, and a
    key is always that KPI, whatever names or aliases other KPIs have."""
    typed = name_phrase(" ".join(name_words))
    exact = [key for key in keys if name_phrase(key) == typed]
    if len(exact) == 1:
        return exact[0]
    if len(keys) > 1:
        options = " or ".join(f"`{key}`" for key in keys)
        raise QueryError(
            f"“{_echo(' '.join(name_words))}” could mean {options}; use the key.",
            example=f"/kpi {keys[0]}",
        )
    return keys[0]


def _kpi_suggestion(name: str, context: _Context) -> str | None:
    key = context.kpi_names.closest(name)
    return f"`{key}` — {context.kpis[key].name}" if key else None


def _starts_rest(words: list[str], at: int, context: _Context, stop_at_number: bool) -> bool:
    """Whether the word at `at` begins something other than a KPI name."""
    word = words[at]
    if word.casefold() in ("by", "per") or "=" in word:
        return True
    if stop_at_number and _number(word) is not None:
        return True
    return _period_phrase(words, at) is not None or context.values.match(words, at) is not None


# The words of periods and breakdowns, for "did you mean" on a misspelt one (`lst month`).
_GRAMMAR_WORDS = (
    "last", "this", "previous", "week", "month", "quarter", "year", "ytd", "today",
    "yesterday", "by", "weeks", "months", "quarters", "years",
)  # fmt: skip


def _word_hint(word: str) -> str:
    if len(word) < 3:
        return ""
    best = process.extractOne(
        word.casefold(), _GRAMMAR_WORDS, scorer=fuzz.ratio, score_cutoff=SUGGEST_CUTOFF
    )
    return f" Did you mean `{best[0]}`?" if best else ""


def _period_phrase(words: list[str], at: int) -> tuple[str, int, bool] | None:
    """The longest period or range phrase starting at `at`: text, end, whether a range."""
    for end in range(min(len(words), at + MAX_PHRASE_WORDS), at, -1):
        text = " ".join(words[at:end])
        if is_range_text(text):
            return text, end, True
        if is_period_text(text):
            return text, end, False
    return None


def _read_rest(
    words: list[str], at: int, context: _Context, *, example: str, new_values: bool = False
) -> _Rest:
    """Read `[period|range] [by <dim>] [<dim>=<value>…] [value…]` in any order."""
    rest = _Rest()
    while at < len(words):
        word = words[at]
        phrase = _period_phrase(words, at)
        if word.casefold() in ("by", "per"):
            at = _read_by(words, at + 1, context, rest, example)
        elif "=" in word:
            at = _read_assignment(words, at, context, rest, example, new_values)
        elif phrase:
            text, at, is_range = phrase
            if rest.period_text is not None or rest.range_text is not None:
                raise QueryError("Give one period or range, not two.", example=example)
            rest.range_text, rest.period_text = (text, None) if is_range else (None, text)
        elif context.values.match(words, at):
            at = _read_bare_value(words, at, context, rest, example)
        else:
            raise QueryError(
                f"I don't understand “{_echo(word)}”.{_word_hint(word)}", example=example
            )
    return rest


def _read_by(words: list[str], at: int, context: _Context, rest: _Rest, example: str) -> int:
    found = context.dimension_names.match(words, at)
    if not found:
        problem = (
            f"I can't split by “{_echo(words[at])}”."
            if at < len(words)
            else "Name a dimension after `by`."
        )
        raise QueryError(f"{problem} {_known_dimensions(context)}", example=example)
    if rest.by is not None:
        raise QueryError("Split by one dimension at a time.", example=example)
    rest.by = found[0][0]
    return found[1]


def _read_assignment(
    words: list[str], at: int, context: _Context, rest: _Rest, example: str, new_values: bool
) -> int:
    """Read `dim=value`; a value of several words may be quoted or simply written out."""
    name, _, first = words[at].partition("=")
    if not name:
        raise QueryError("Write a filter as dim=value.", example=example)
    found = context.dimension_names.match([name], 0)
    if not found:
        raise QueryError(
            f"There is no dimension “{_echo(name)}”. {_known_dimensions(context)}", example=example
        )
    dim = found[0][0]
    value, end = _assigned_value(words, at, first, context.dimensions[dim])
    if not value:
        raise QueryError(f"Give a value after `{dim}=`.", example=example)
    known = _known_value(dim, value, context)
    if known is None and not new_values:
        values = ", ".join(sorted(context.dimensions[dim])[:20])
        raise QueryError(
            f"There is no {dim} “{_echo(value)}”. Known: {_echo(values) or 'none yet'}.",
            example=example,
        )
    _add_filter(rest, dim, known or value, example)
    return end


def _assigned_value(
    words: list[str], at: int, first: str, known: Collection[str]
) -> tuple[str, int]:
    """The value after `dim=` and where it ends: the longest known value spelt over the
    following words (`branch=New York`), or else the one word (quoted, it may have spaces)."""
    phrases = {name_phrase(value) for value in known}
    for end in range(min(len(words), at + 6), at, -1):
        if name_phrase(" ".join([first, *words[at + 1 : end]])) in phrases:
            return " ".join([first, *words[at + 1 : end]]), end
    return first, at + 1


def _read_bare_value(
    words: list[str], at: int, context: _Context, rest: _Rest, example: str
) -> int:
    """A value such as `berlin` alone is a filter if it belongs to exactly one dimension."""
    pairs, end = context.values.match(words, at) or ([], at + 1)
    if len({dim for dim, _ in pairs}) > 1:
        text = _echo(" ".join(words[at:end]))
        options = " or ".join(f"`{dim}={value}`" for dim, value in sorted(pairs))
        raise QueryError(
            f"“{text}” is a value of several dimensions; write {options}.", example=example
        )
    _add_filter(rest, pairs[0][0], pairs[0][1], example)
    return end


def _add_filter(rest: _Rest, dim: str, value: str, example: str) -> None:
    if rest.filters.get(dim, value) != value:
        raise QueryError(f"Give one value for {dim}.", example=example)
    rest.filters[dim] = value


def _known_value(dim: str, value: str, context: _Context) -> str | None:
    """The stored spelling of `value` among the dimension's values, matched loosely."""
    wanted = name_phrase(value)
    return next((known for known in context.dimensions[dim] if name_phrase(known) == wanted), None)


def _known_dimensions(context: _Context) -> str:
    if not context.dimensions:
        return "There are no dimensions yet."
    return f"Dimensions: {_echo(', '.join(context.dimensions))}."


def _period(text: str, kpi: KpiName, context: _Context) -> Period:
    try:
        return parse_period(text, context.as_of, context.tz, kpi.cadence)
    except PeriodError as error:
        # The periods module can't know the KPI; give an example that names this one.
        error.example = f"/kpi {kpi.key} last month"
        raise


def _range(text: str, kpi: KpiName, context: _Context) -> list[Period]:
    try:
        return parse_range(text, context.as_of, context.tz, kpi.cadence)
    except PeriodError as error:
        error.example = f"/kpi trend {kpi.key} 12w"
        raise


def _record_day(text: str, context: _Context, example: str) -> date:
    try:
        period = parse_period(text, context.as_of, context.tz, "day")
    except PeriodError as error:
        error.example = example
        raise
    if period.grain != "day":
        raise QueryError(
            f"A value is recorded for one day, like 2026-10-05; “{_echo(text)}” is longer.",
            example=example,
        )
    return period.start


_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?%?|[+-]?\.[0-9]+%?")


def _number(word: str) -> float | None:
    """`45`, `45.5`, `1,200`, `-3`, `12%` (as 12); None for anything else or too large."""
    if not _NUMBER.fullmatch(word):
        return None
    value = float(word.replace(",", "").rstrip("%"))
    return value if math.isfinite(value) else None


def _number_at(words: list[str], at: int, what: str, example: str) -> tuple[float, int]:
    value = _number(words[at]) if at < len(words) else None
    if value is None:
        given = f", not “{_echo(words[at])}”" if at < len(words) else ""
        raise QueryError(f"Give {what} as a number{given}.", example=example)
    return value, at + 1


def _due_at(words: list[str], at: int, example: str) -> tuple[date, int]:
    text = words[at] if at < len(words) else ""
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError(text)
        return date.fromisoformat(text), at + 1
    except ValueError:
        raise QueryError("Give the due date as YYYY-MM-DD.", example=example) from None


def _until_number(words: list[str]) -> list[str]:
    end = next((i for i, word in enumerate(words) if _number(word) is not None), len(words))
    return words[:end]


def _unknown_measure(name: str, context: _Context) -> QueryError:
    example = "/kpi record credit_sales 120000 2026-10-05 branch=Berlin"
    if not name:
        return QueryError("Which measure? Name it after `record`.", example=example)
    closest = context.measure_names.closest(name)
    hint = f" Did you mean `{closest}`?" if closest else ""
    return QueryError(f"I don't know a measure called “{_echo(name)}”.{hint}", example=example)


def _nothing_after(command: str, words: list[str]) -> None:
    if words:
        raise QueryError(
            f"`{command}` takes nothing after it, not “{_echo(' '.join(words))}”.",
            example=f"/kpi {command}",
        )


SUBSCRIBE_EXAMPLE = "/kpi subscribe Finance, dso weekly on monday at 09:00 tz Europe/Berlin"


def _weekday(word: str) -> int | None:
    return WEEKDAY_WORDS.get(word.removesuffix("s"))  # "mondays" too


def _time_at(words: list[str], at: int) -> tuple[time, int]:
    text = words[at].casefold() if at < len(words) else ""
    clock = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", text)
    twelve_hour = re.fullmatch(r"([0-9]{1,2})(?::([0-9]{2}))?([ap]m)", text)
    hour = minute = -1
    if clock:
        hour, minute = int(clock[1]), int(clock[2])
    elif twelve_hour and 1 <= int(twelve_hour[1]) <= 12:
        # 12am is midnight and 12pm noon.
        hour = int(twelve_hour[1]) % 12 + (12 if twelve_hour[3] == "pm" else 0)
        minute = int(twelve_hour[2] or 0)
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise QueryError("Give the time as HH:MM, like 09:00.", example=SUBSCRIBE_EXAMPLE)
    return time(hour, minute), at + 1


def _zone_at(words: list[str], at: int) -> tuple[str, int]:
    text = words[at] if at < len(words) else ""
    zone = _zones().get(text.casefold())
    if zone is None:
        raise QueryError(
            f"I don't know the time zone “{_echo(text)}”; use an IANA name like Europe/Berlin.",
            example=SUBSCRIBE_EXAMPLE,
        )
    return zone, at + 1


@cache
def _zones() -> dict[str, str]:
    # Looked up in the list, never opened by name: user text must not become a file path.
    return {name.casefold(): name for name in available_timezones() | {"UTC"}}


def _unknown_day(word: str) -> QueryError:
    names = [name.capitalize() for name in WEEKDAYS]
    best = process.extractOne(word.capitalize(), names, scorer=fuzz.ratio, score_cutoff=60)
    hint = f" Did you mean {best[0]}?" if best else ""
    return QueryError(
        f"“{_echo(word)}” is not a day of the week.{hint} Digests go out weekly on one day.",
        example=SUBSCRIBE_EXAMPLE,
    )


def _unknown_item(word: str, context: _Context) -> UnknownKpi:
    kpi = context.kpi_names.closest_scored(word)
    area = context.area_names.closest_scored(word)
    if area and (kpi is None or area[1] > kpi[1]):
        return UnknownKpi(_echo(word), f"the area `{area[0]}`")
    return UnknownKpi(_echo(word), _kpi_suggestion(word, context))
