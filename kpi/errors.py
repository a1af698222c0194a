"""Errors a user can fix. The message is the help they read, so keep it short and concrete."""


class KpibotError(Exception):
    """Something the user can fix; `str(error)` is shown to them as is."""

    def __init__(self, message: str, *, example: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.example = example

    def __str__(self) -> str:
        return self.message


class ConfigError(KpibotError):
    """A bad setting or catalog entry."""


class PeriodError(KpibotError):
    """A period or range the parser cannot read."""


class QueryError(KpibotError):
    """A `/kpi` text that cannot be understood."""


class UnknownKpi(QueryError):
    """No KPI by that name — or one the asker may not see (worded the same on purpose)."""

    def __init__(self, name: str, suggestion: str | None = None) -> None:
        hint = f" Did you mean {suggestion}?" if suggestion else ""
        super().__init__(f"I don't know a KPI called “{name}”.{hint}", example="/kpi list")
        self.name = name
        self.suggestion = suggestion


class ImportRejected(KpibotError):
    """A measure file with bad rows; nothing of it was stored."""

    def __init__(self, problems: list[str], total: int) -> None:
        shown = problems[:50]
        more = f"\n… and {total - len(shown)} more bad lines" if total > len(shown) else ""
        super().__init__(
            f"rejected: {total} bad line{'s' if total != 1 else ''}, nothing stored\n"
            + "\n".join(shown)
            + more
        )
        self.problems = problems
        self.total = total


class StoreBusy(KpibotError):
    """The store is locked by a big write (the first import into an empty PostgreSQL store)."""

    def __init__(self) -> None:
        super().__init__("The KPI store is busy loading a big import. Try again in a few seconds.")


class StoreUnavailable(KpibotError):
    """The store cannot be reached or opened (a missing directory, a server that is down)."""


class PermissionDenied(KpibotError):
    """The user may see the KPI but not change it."""
