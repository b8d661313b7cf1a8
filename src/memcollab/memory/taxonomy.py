"""Two-level task taxonomies: the (category, subcategory) buckets memory is filed under.

MemCollab files each distilled record under a (category, subcategory) of a hand-made
taxonomy of its domain; at inference the agent's own model classifies a new task into one
of these buckets (`memory.classify`) and retrieval reads that bucket only.

A taxonomy is a TOML file:

    name = "math"                # optional, defaults to the file's stem
    domain = "math"              # math | code (the domains of tasks and memory records)
    version = 1                  # optional integer, defaults to 1
    description = "..."          # optional

    [[categories]]
    name = "Number Theory"
    description = "Divisibility, primes, gcd and lcm, modular arithmetic, bases, digits"
    subcategories = [
      { name = "modular arithmetic", description = "remainders, congruences mod n" },
      "bases and digits",        # a bare name is a subcategory without a description
    ]

Category names are unique; subcategory names are unique within their category; both are
compared after `normalize_name` (case, whitespace, punctuation, '&' = 'and'), so a model's
"counting and probability" finds "Counting & Probability". The built-in taxonomies "math"
(the 7 MATH subjects) and "code" ship as package data (memory/taxonomies/*.toml).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from memcollab.errors import UserError
from memcollab.tasks.task import Domain

BUILTIN_TAXONOMIES = ("math", "code")
_TOP_KEYS = {"name", "domain", "version", "description", "categories"}
_CATEGORY_KEYS = {"name", "description", "subcategories"}
_SUBCATEGORY_KEYS = {"name", "description"}
_FORMAT_HINT = "see the format in memcollab.memory.taxonomy's docstring"


class TaxonomyError(UserError):
    """A taxonomy file that cannot be read, does not parse, or is malformed."""


def normalize_name(text: str) -> str:
    """The comparison form of a category or subcategory name.

    Unicode-normalised and case-folded; '&' reads as 'and'; apostrophes vanish
    ("Pascal's" = "Pascals"); any other run of punctuation or whitespace is one space.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("&", " and ")
    text = re.sub(r"['\u2019`]", "", text)
    text = re.sub(r"[\W_]+", " ", text)
    return text.strip()


@dataclass(frozen=True)
class Subcategory:
    """One subcategory (the second level)."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class Category:
    """One category (the first level) and its subcategories, in file order."""

    name: str
    description: str
    subcategories: tuple[Subcategory, ...]

    def subcategory_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.subcategories)


@dataclass(frozen=True)
class Taxonomy:
    """A domain's two-level taxonomy. Lookups accept any spelling `normalize_name` equates."""

    name: str
    domain: Domain
    tree: tuple[Category, ...]
    version: int = 1
    description: str = ""
    source: str = "<dict>"
    _index: dict[str, tuple[Category, dict[str, Subcategory]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index = {
            normalize_name(c.name): (c, {normalize_name(s.name): s for s in c.subcategories})
            for c in self.tree
        }
        object.__setattr__(self, "_index", index)

    # -- lookups ---------------------------------------------------------------------------
    def categories(self) -> tuple[str, ...]:
        """The category names, in file order."""
        return tuple(c.name for c in self.tree)

    def category(self, name: str) -> Category:
        """The category called `name` (any equivalent spelling); KeyError if there is none."""
        entry = self._index.get(normalize_name(name))
        if entry is None:
            raise KeyError(f"taxonomy {self.name!r} has no category {name!r}")
        return entry[0]

    def subcategories(self, category: str) -> tuple[str, ...]:
        """The subcategory names of `category`, in file order; KeyError for an unknown one."""
        return self.category(category).subcategory_names()

    def resolve_category(self, text: str) -> str | None:
        """The canonical spelling of a category name, or None if `text` names none."""
        entry = self._index.get(normalize_name(text))
        return entry[0].name if entry else None

    def resolve_subcategory(self, category: str, text: str) -> str | None:
        """The canonical spelling of a subcategory of `category`, or None."""
        entry = self._index.get(normalize_name(category))
        if entry is None:
            return None
        sub = entry[1].get(normalize_name(text))
        return sub.name if sub else None

    def has(self, category: str, subcategory: str | None = None) -> bool:
        """Whether the category (and, if given, its subcategory) exists."""
        if subcategory is None:
            return self.resolve_category(category) is not None
        return self.resolve_subcategory(category, subcategory) is not None

    def pairs(self) -> list[tuple[str, str]]:
        """Every (category, subcategory), in file order."""
        return [(c.name, s.name) for c in self.tree for s in c.subcategories]

    def sizes(self) -> dict[str, int]:
        """Number of subcategories per category."""
        return {c.name: len(c.subcategories) for c in self.tree}

    @property
    def digest(self) -> str:
        """A short sha256 of the content (not the source), to tell taxonomies apart."""
        payload = {
            "name": self.name,
            "domain": self.domain,
            "version": self.version,
            "tree": [
                [c.name, c.description, [[s.name, s.description] for s in c.subcategories]]
                for c in self.tree
            ],
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# -- parsing --------------------------------------------------------------------------------
def _fail(source: str, problem: str, fix: str | None = _FORMAT_HINT) -> TaxonomyError:
    return TaxonomyError(f"{source}: {problem}", fix)


def _text(source: str, where: str, value: Any, key: str, *, required: bool = True) -> str:
    if value is None:
        if required:
            raise _fail(source, f"{where} is missing `{key}`")
        return ""
    if not isinstance(value, str):
        raise _fail(source, f"{where}: `{key}` must be a string, not {type(value).__name__}")
    value = " ".join(value.split())
    if required and not value:
        raise _fail(source, f"{where}: `{key}` is empty")
    return value


def _unknown_keys(source: str, where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(
            source,
            f"{where}: unknown key(s) {', '.join(unknown)}",
            f"allowed keys: {', '.join(sorted(allowed))}",
        )


def _subcategory(source: str, where: str, entry: Any) -> Subcategory:
    if isinstance(entry, str):
        return Subcategory(name=_text(source, where, entry, "name"))
    if not isinstance(entry, dict):
        raise _fail(source, f"{where} must be a table {{name, description}} or a name string")
    _unknown_keys(source, where, entry, _SUBCATEGORY_KEYS)
    return Subcategory(
        name=_text(source, where, entry.get("name"), "name"),
        description=_text(source, where, entry.get("description"), "description"),
    )


def _category(source: str, number: int, entry: Any) -> Category:
    where = f"categories[{number}]"
    if not isinstance(entry, dict):
        raise _fail(source, f"{where} must be a table ([[categories]])")
    _unknown_keys(source, where, entry, _CATEGORY_KEYS)
    name = _text(source, where, entry.get("name"), "name")
    where = f"{where} ({name!r})"
    description = _text(source, where, entry.get("description"), "description")
    raw_subs = entry.get("subcategories")
    if raw_subs is None:
        raise _fail(source, f"{where} is missing `subcategories`")
    if not isinstance(raw_subs, list):
        raise _fail(source, f"{where}: `subcategories` must be a list")
    if not raw_subs:
        raise _fail(source, f"{where}: `subcategories` is empty", "give at least one subcategory")
    subs = tuple(
        _subcategory(source, f"{where}.subcategories[{i}]", s) for i, s in enumerate(raw_subs)
    )
    _no_duplicates(source, f"{where}: subcategory", [s.name for s in subs])
    return Category(name=name, description=description, subcategories=subs)


def _no_duplicates(source: str, what: str, names: list[str]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        key = normalize_name(name)
        if not key:
            raise _fail(source, f"{what} name {name!r} has no letters or digits")
        if key in seen:
            same = "" if seen[key] == name else f" (same as {seen[key]!r})"
            raise _fail(source, f"duplicate {what} name {name!r}{same}", "names must be unique")
        seen[key] = name


def taxonomy_from_dict(data: dict[str, Any], source: str = "<dict>") -> Taxonomy:
    """Build a taxonomy from parsed TOML; TaxonomyError names `source` and the problem."""
    if not isinstance(data, dict):
        raise _fail(source, "a taxonomy must be a table")
    _unknown_keys(source, "top level", data, _TOP_KEYS)
    domain = _text(source, "top level", data.get("domain"), "domain")
    from memcollab.domains import DOMAINS

    if domain not in DOMAINS:
        raise _fail(
            source, f"unknown domain {domain!r}", f"use one of: {', '.join(sorted(DOMAINS))}"
        )
    name = _text(source, "top level", data.get("name"), "name", required=False)
    if not name:
        name = Path(source).stem if source.endswith(".toml") else domain
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(source, f"`version` must be an integer, not {version!r}")
    description = _text(source, "top level", data.get("description"), "description", required=False)
    raw_categories = data.get("categories")
    if raw_categories is None:
        raise _fail(source, "no `categories`", "add [[categories]] tables")
    if not isinstance(raw_categories, list) or not raw_categories:
        raise _fail(source, "`categories` must be a non-empty list of [[categories]] tables")
    tree = tuple(_category(source, i, c) for i, c in enumerate(raw_categories))
    _no_duplicates(source, "category", [c.name for c in tree])
    return Taxonomy(
        name=name,
        domain=domain,  # type: ignore[arg-type]
        tree=tree,
        version=version,
        description=description,
        source=source,
    )


def parse_taxonomy(text: str, source: str = "<string>") -> Taxonomy:
    """Parse taxonomy TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(source, f"not valid TOML: {' '.join(str(exc).split())}", None) from None
    return taxonomy_from_dict(data, source)


@cache
def builtin_taxonomy(domain: str) -> Taxonomy:
    """The taxonomy shipped for `domain` ("math" or "code")."""
    if domain not in BUILTIN_TAXONOMIES:
        raise TaxonomyError(
            f"no built-in taxonomy {domain!r}", f"built-in: {', '.join(BUILTIN_TAXONOMIES)}"
        )
    resource = files("memcollab").joinpath(f"memory/taxonomies/{domain}.toml")
    return parse_taxonomy(resource.read_text(encoding="utf-8"), f"<built-in {domain}.toml>")


def load_taxonomy(path_or_name: str | Path | Taxonomy) -> Taxonomy:
    """A built-in taxonomy by name ("math", "code"), or a user's taxonomy TOML file.

    A string equal to a built-in name means the built-in one; write "./math" for a file
    called "math" in the working directory. A `Taxonomy` is returned as it is.
    """
    if isinstance(path_or_name, Taxonomy):
        return path_or_name
    if isinstance(path_or_name, str) and path_or_name in BUILTIN_TAXONOMIES:
        return builtin_taxonomy(path_or_name)
    path = Path(path_or_name).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaxonomyError(
            f"taxonomy file not found: {path}",
            f"give a TOML file or a built-in name ({', '.join(BUILTIN_TAXONOMIES)})",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaxonomyError(f"cannot read taxonomy file {path}: {exc}") from None
    return parse_taxonomy(text, str(path))
