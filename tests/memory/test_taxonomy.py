"""Taxonomies: the built-in ones, user files, lookups by any spelling, malformed files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from memcollab.errors import UserError
from memcollab.memory.taxonomy import (
    Taxonomy,
    TaxonomyError,
    builtin_taxonomy,
    load_taxonomy,
    normalize_name,
    parse_taxonomy,
)

MATH_SUBJECTS = (
    "Algebra",
    "Counting & Probability",
    "Geometry",
    "Intermediate Algebra",
    "Number Theory",
    "Prealgebra",
    "Precalculus",
)

USER_TOML = """
name = "tiny"
domain = "code"
version = 3
description = "a user's taxonomy"

[[categories]]
name = "Strings & Text"
description = "work on strings"
subcategories = [
  { name = "reversal", description = "reverse things" },
  "counting characters",
]

[[categories]]
name = "Numbers"
description = "integers"
subcategories = [{ name = "primes", description = "prime numbers" }]
"""


def test_math_taxonomy_has_the_seven_math_subjects_with_8_to_15_subtopics() -> None:
    tax = builtin_taxonomy("math")
    assert tax.domain == "math"
    assert set(tax.categories()) == set(MATH_SUBJECTS)
    for category in tax.tree:
        assert 8 <= len(category.subcategories) <= 15, category.name
        assert category.description
        assert all(s.description for s in category.subcategories)


def test_math_taxonomy_covers_grade_school_word_problems() -> None:
    tax = builtin_taxonomy("math")
    for category, subcategory in [
        ("Prealgebra", "ratios and rates"),
        ("Prealgebra", "percentages"),
        ("Prealgebra", "unit conversion"),
        ("Prealgebra", "multi-step arithmetic word problems"),
        ("Prealgebra", "money and budgeting"),
        ("Algebra", "rates, work and mixtures"),
        ("Number Theory", "modular arithmetic"),
        ("Number Theory", "gcd and lcm"),
    ]:
        assert tax.has(category, subcategory), (category, subcategory)


def test_code_taxonomy_covers_the_kinds_of_mbpp_and_humaneval_tasks() -> None:
    tax = builtin_taxonomy("code")
    assert tax.domain == "code"
    for name in [
        "String processing",
        "Arithmetic and number theory",
        "List and array manipulation",
        "Sorting and searching",
        "Hashing and counting",
        "Recursion and dynamic programming",
        "Parsing",
        "Geometry",
        "Data structures",
        "Bit manipulation",
        "Math formulas",
        "Matrices and grids",
        "Regular expressions",
        "Date and time",
    ]:
        assert tax.has(name), name
    for category in tax.tree:
        assert len(category.subcategories) >= 3, category.name
        assert category.description and all(s.description for s in category.subcategories)


def test_normalize_name_equates_case_whitespace_ampersand_and_punctuation() -> None:
    assert normalize_name("Counting & Probability") == "counting and probability"
    assert normalize_name("  counting   AND probability. ") == "counting and probability"
    assert normalize_name("Pascal\u2019s triangle") == normalize_name("pascals Triangle")
    assert normalize_name("inclusion-exclusion") == "inclusion exclusion"


def test_lookups_accept_model_spellings_and_return_canonical_names() -> None:
    tax = builtin_taxonomy("math")
    assert tax.resolve_category("counting and probability") == "Counting & Probability"
    assert tax.resolve_category("NUMBER   theory") == "Number Theory"
    assert tax.resolve_category("Calculus") is None
    assert tax.resolve_subcategory("number theory", "GCD & LCM") == "gcd and lcm"
    assert tax.resolve_subcategory("Geometry", "gcd and lcm") is None
    assert tax.has("counting and probability", "Expected Value")
    assert not tax.has("Algebra", "expected value")
    assert tax.subcategories("prealgebra")[0] == "arithmetic and order of operations"
    with pytest.raises(KeyError):
        tax.subcategories("Calculus")
    assert len(tax.pairs()) == sum(tax.sizes().values())


def test_taxonomy_is_frozen_and_hashable() -> None:
    tax = builtin_taxonomy("code")
    with pytest.raises(dataclasses.FrozenInstanceError):
        tax.name = "other"  # type: ignore[misc]
    assert hash(tax) == hash(builtin_taxonomy("code"))


def test_load_by_builtin_name_by_path_and_passthrough(tmp_path: Path) -> None:
    assert load_taxonomy("math") is builtin_taxonomy("math")
    path = tmp_path / "tiny.toml"
    path.write_text(USER_TOML)
    tax = load_taxonomy(path)
    assert isinstance(tax, Taxonomy)
    assert (tax.name, tax.domain, tax.version, tax.source) == ("tiny", "code", 3, str(path))
    assert tax.categories() == ("Strings & Text", "Numbers")
    assert tax.subcategories("strings and text") == ("reversal", "counting characters")
    assert tax.category("Strings & Text").subcategories[1].description == ""
    assert load_taxonomy(str(path)) == tax
    assert load_taxonomy(tax) is tax


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(USER_TOML.replace('name = "tiny"\n', ""))
    assert load_taxonomy(path).name == "mine"


def test_digest_depends_on_content_not_on_the_source(tmp_path: Path) -> None:
    a = parse_taxonomy(USER_TOML, "a.toml")
    b = parse_taxonomy(USER_TOML, "b.toml")
    c = parse_taxonomy(USER_TOML.replace("reverse things", "reverse strings"), "a.toml")
    assert a.digest == b.digest != c.digest
    assert builtin_taxonomy("math").digest != builtin_taxonomy("code").digest


def test_unknown_builtin_and_missing_file_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="no built-in taxonomy 'chem'"):
        builtin_taxonomy("chem")
    missing = tmp_path / "nope.toml"
    with pytest.raises(TaxonomyError, match="nope.toml"):
        load_taxonomy(missing)


_CAT = '[[categories]]\nname = "A"\ndescription = "a"\nsubcategories = ["x", "y"]\n'

MALFORMED = {
    "bad_toml": ('domain = "math"\n[[categories]\nname = "A"\n', "not valid TOML"),
    "missing_domain": (_CAT, "missing `domain`"),
    "unknown_domain": ('domain = "chemistry"\n' + _CAT, "unknown domain 'chemistry'"),
    "no_categories": ('domain = "math"\n', "no `categories`"),
    "empty_categories": ('domain = "math"\ncategories = []\n', "non-empty list"),
    "missing_category_name": (
        'domain = "math"\n[[categories]]\ndescription = "a"\nsubcategories = ["x"]\n',
        "categories[0] is missing `name`",
    ),
    "missing_category_description": (
        'domain = "math"\n[[categories]]\nname = "A"\nsubcategories = ["x"]\n',
        "missing `description`",
    ),
    "missing_subcategories": (
        'domain = "math"\n[[categories]]\nname = "A"\ndescription = "a"\n',
        "missing `subcategories`",
    ),
    "empty_subcategories": (
        'domain = "math"\n[[categories]]\nname = "A"\ndescription = "a"\nsubcategories = []\n',
        "`subcategories` is empty",
    ),
    "subcategory_without_name": (
        'domain = "math"\n[[categories]]\nname = "A"\ndescription = "a"\n'
        'subcategories = [{ description = "d" }]\n',
        "subcategories[0] is missing `name`",
    ),
    "duplicate_category": (
        'domain = "math"\n' + _CAT + _CAT.replace('"A"', '"a"'),
        "duplicate category name 'a'",
    ),
    "duplicate_category_ampersand": (
        'domain = "math"\n'
        + _CAT.replace('"A"', '"Counting & Probability"')
        + _CAT.replace('"A"', '"counting and probability"'),
        "duplicate category name",
    ),
    "duplicate_subcategory": (
        'domain = "math"\n[[categories]]\nname = "A"\ndescription = "a"\n'
        'subcategories = ["gcd and lcm", "GCD & LCM"]\n',
        "duplicate categories[0] ('A'): subcategory name 'GCD & LCM'",
    ),
    "unknown_key": ('domain = "math"\nsubcategory = 1\n' + _CAT, "unknown key(s) subcategory"),
    "wrong_type": (
        'domain = "math"\n[[categories]]\nname = 3\ndescription = "a"\nsubcategories = ["x"]\n',
        "`name` must be a string",
    ),
    "punctuation_only_name": (
        'domain = "math"\n' + _CAT.replace('"A"', '"-- !"'),
        "has no letters or digits",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_one_line_taxonomy_error_naming_the_file(
    case: str, tmp_path: Path
) -> None:
    text, expected = MALFORMED[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    with pytest.raises(TaxonomyError) as info:
        load_taxonomy(path)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message
