"""Which source tables a pipeline carries: names, glob patterns and ``!`` exclusions.

``source.tables = ["dbo.orders", "sales.*", "!sales.tmp_*"]`` carries ``dbo.orders`` (a
name: it must exist and be tracked, or the worker refuses to start) and every tracked
table matching ``sales.*`` except those matching ``sales.tmp_*``. Patterns are resolved
against the source catalog at start and again while running, so a table that starts
being tracked later is picked up. Matching ignores case, as SQL Server's default
collation and SQLite do.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_WILDCARDS = frozenset("*?[")


def is_pattern(entry: str) -> bool:
    return any(ch in _WILDCARDS for ch in entry)


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name.casefold(), pattern.casefold())


@dataclass(frozen=True, slots=True)
class TableSelection:
    names: tuple[str, ...]  # named outright
    patterns: tuple[str, ...]  # tracked tables matching one of these are carried …
    exclusions: tuple[str, ...]  # … unless they match one of these

    @classmethod
    def parse(cls, entries: Sequence[str]) -> TableSelection:
        """Split ``source.tables``; raises ValueError naming a contradictory entry."""
        names: list[str] = []
        patterns: list[str] = []
        exclusions: list[str] = []
        for entry in entries:
            if entry.startswith("!"):
                exclusions.append(entry[1:])
            elif is_pattern(entry):
                patterns.append(entry)
            else:
                names.append(entry)
        if not names and not patterns:
            raise ValueError(
                "has only exclusions ('!…'): add the tables or patterns to carry, "
                "e.g. ['dbo.*', '!dbo.tmp_*']"
            )
        for name in names:
            for exclusion in exclusions:
                if _matches(name, exclusion):
                    raise ValueError(
                        f"{name!r} is listed by name and excluded by '!{exclusion}'; "
                        "remove one of the two"
                    )
        return cls(tuple(names), tuple(patterns), tuple(exclusions))

    def selects(self, name: str) -> bool:
        """Whether a table of this name is carried (if it exists and is tracked)."""
        if name in self.names:
            return True
        if any(_matches(name, e) for e in self.exclusions):
            return False
        return any(_matches(name, p) for p in self.patterns)

    def resolve(self, tracked: Iterable[str]) -> list[str]:
        """The tables to carry: every name, then the tracked tables the patterns select.

        Names come first and in their configured order, whether tracked or not (the
        reader then says what is wrong with them); matches follow, sorted.
        """
        chosen = list(self.names)
        known = {n.casefold() for n in chosen}
        matched = sorted(
            t
            for t in set(tracked)
            if t.casefold() not in known
            and not any(_matches(t, e) for e in self.exclusions)
            and any(_matches(t, p) for p in self.patterns)
        )
        return chosen + matched

    def unmatched_patterns(self, tracked: Iterable[str]) -> list[str]:
        """Patterns that select no tracked table (worth a warning, not an error)."""
        tracked = list(tracked)
        return [p for p in self.patterns if not any(_matches(t, p) for t in tracked)]
