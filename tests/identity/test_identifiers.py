"""Identifier extraction and normalisation (pure, no database)."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from app.identity import identifiers
from app.identity.identifiers import (
    MAX_EXTERNAL_IDS,
    IdentityConfig,
    InvalidIdentifier,
    Rejected,
    extract_identifiers,
    is_blocked,
    normalise,
    normalise_kind,
)
from app.touchpoint import Identifier

CONFIG = IdentityConfig()


def extract(
    type: str = "track",
    user_id: object = None,
    anonymous_id: object = None,
    traits: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    config: IdentityConfig = CONFIG,
) -> tuple[list[tuple[str, str]], list[Rejected]]:
    result = extract_identifiers(
        type=type,
        user_id=user_id,
        anonymous_id=anonymous_id,
        traits=traits or {},
        context=context or {},
        config=config,
    )
    return [(i.kind, i.value) for i in result.identifiers], result.rejected


# --- sources -----------------------------------------------------------------------------


def test_identify_takes_user_anonymous_and_trait_identifiers_in_canonical_order() -> None:
    found, rejected = extract(
        type="identify",
        user_id="u-1",
        anonymous_id="anon-1",
        traits={"email": "Ada@Example.com", "phone": "333 123 4567", "crm_id": "C-9"},
    )
    assert found == [
        ("user_id", "u-1"),
        ("crm_id", "C-9"),
        ("email", "ada@example.com"),
        ("phone", "+393331234567"),
        ("anonymous_id", "anon-1"),
    ]
    assert rejected == []
    result = extract_identifiers(
        type="identify", user_id="u-1", anonymous_id=None, traits={}, context={}, config=CONFIG
    )
    assert result.identifiers == [Identifier(kind="user_id", value="u-1")]


def test_track_uses_context_traits() -> None:
    found, _ = extract(
        anonymous_id="anon-1",
        context={"traits": {"email": "ada@example.com", "phone": "+44 20 7946 0958"}},
    )
    assert found == [
        ("email", "ada@example.com"),
        ("phone", "+442079460958"),
        ("anonymous_id", "anon-1"),
    ]


@pytest.mark.parametrize("call", ["track", "page", "screen", "group", "alias"])
def test_top_level_traits_only_count_on_identify(call: str) -> None:
    # Group traits describe the company: its email must not become the person's.
    found, _ = extract(type=call, anonymous_id="a", traits={"email": "sales@acme.com"})
    assert found == [("anonymous_id", "a")]


def test_on_identify_top_level_traits_win_over_context_traits() -> None:
    found, _ = extract(
        type="identify",
        user_id="u-1",
        traits={"email": "new@example.com"},
        context={"traits": {"email": "old@example.com", "phone": "3331234567"}},
    )
    assert found == [
        ("user_id", "u-1"),
        ("email", "new@example.com"),
        ("phone", "+393331234567"),
    ]


def test_crm_id_from_trait_camel_case_trait_and_external_id() -> None:
    found, _ = extract(type="identify", traits={"crmId": "C-1"})
    assert found == [("crm_id", "C-1")]
    found, _ = extract(context={"externalIds": [{"id": "C-2", "type": "crm_id"}]})
    assert found == [("crm_id", "C-2")]
    found, _ = extract(
        context={"traits": {"crm_id": "C-1"}, "externalIds": [{"id": "C-1", "type": "CRM-ID"}]}
    )
    assert found == [("crm_id", "C-1")]


def test_external_ids_give_custom_kinds_in_order_found_after_builtins() -> None:
    found, rejected = extract(
        anonymous_id="a",
        context={
            "externalIds": [
                {"id": "L-77", "type": "Loyalty Card", "collection": "users", "encoding": "none"},
                {"id": "ADA@EXAMPLE.COM", "type": "email"},
                {"id": "idfa-1", "type": "ios.idfa"},
                {"id": "9", "type": "userId"},
            ]
        },
    )
    assert found == [
        ("user_id", "9"),
        ("email", "ada@example.com"),
        ("anonymous_id", "a"),
        ("loyalty_card", "L-77"),
        ("ios_idfa", "idfa-1"),
    ]
    assert rejected == []


@pytest.mark.parametrize(
    ("externals", "expected"),
    [
        ("not-a-list", Rejected("external_id", "not-a-list", "externalIds is not a list")),
        (["loose"], Rejected("external_id", "loose", "not an object")),
        ([{"type": "crm_id"}], Rejected("crm_id", "null", "external id has no id")),
        ([{"id": "x"}], Rejected("external_id", "null", "external id type is not a string")),
        ([{"id": "x", "type": "  "}], Rejected("external_id", "  ", "external id has no type")),
        (
            [{"id": "x", "type": "a/b"}],
            Rejected(
                "external_id",
                "a/b",
                "external id type may only use letters, digits, _ - . and space",
            ),
        ),
        (
            [{"id": "x", "type": "t" * 65}],
            Rejected("external_id", "t" * 65, "external id type longer than 64 characters"),
        ),
        (
            [{"id": {"a": 1}, "type": "card"}],
            Rejected("card", "<object>", "not a string or integer"),
        ),
        (
            [{"id": "acme", "type": "group_id", "collection": "accounts"}],
            Rejected("group_id", "acme", "not a person's id (collection 'accounts')"),
        ),
    ],
)
def test_malformed_external_ids_are_rejected_with_a_reason(
    externals: object, expected: Rejected
) -> None:
    found, rejected = extract(anonymous_id="a", context={"externalIds": externals})
    assert found == [("anonymous_id", "a")]
    assert rejected == [expected]


def test_hashed_external_id_is_its_own_kind_not_an_email() -> None:
    digest = "5d41402abc4b2a76b9719d911017c592"
    found, rejected = extract(
        context={"externalIds": [{"id": digest, "type": "email", "encoding": "sha256"}]}
    )
    assert found == [("email_sha256", digest)]
    assert rejected == []


def test_too_many_external_ids_are_cut_and_reported() -> None:
    entries = [{"id": f"d{i}", "type": "device"} for i in range(MAX_EXTERNAL_IDS + 5)]
    found, rejected = extract(context={"externalIds": entries})
    assert len(found) == MAX_EXTERNAL_IDS
    assert [r.kind for r in rejected] == ["external_id"]


@pytest.mark.parametrize(
    ("raw", "expected"), [(42, "42"), (-7, "-7"), (12345.0, "12345"), (10**20, str(10**20))]
)
def test_numeric_user_id_becomes_its_decimal_string(raw: object, expected: str) -> None:
    found, rejected = extract(user_id=raw)
    assert found == [("user_id", expected)]
    assert rejected == []


@pytest.mark.parametrize(
    ("raw", "raw_shown", "reason"),
    [
        (True, "true", "not a string or integer"),
        (False, "false", "not a string or integer"),
        (1.5, "1.5", "not a whole number"),
        (float("nan"), "nan", "not a whole number"),
        (2.0**60, repr(2.0**60), "number too large to be exact"),
        ({"id": 1}, "<object>", "not a string or integer"),
        ([1, 2], "<array>", "not a string or integer"),
        ("[object Object]", "[object Object]", "blocked value"),
    ],
)
def test_garbage_user_ids_are_rejected(raw: object, raw_shown: str, reason: str) -> None:
    found, rejected = extract(user_id=raw, anonymous_id="a")
    assert found == [("anonymous_id", "a")]
    assert rejected == [Rejected("user_id", raw_shown, reason)]


def test_invalid_phone_is_rejected_not_used() -> None:
    found, rejected = extract(anonymous_id="a", context={"traits": {"phone": "12"}})
    assert found == [("anonymous_id", "a")]
    assert rejected == [Rejected("phone", "12", "not a valid phone number")]


def test_duplicates_across_sources_are_kept_once() -> None:
    found, _ = extract(
        type="identify",
        user_id=" u-1 ",
        anonymous_id="a",
        traits={"email": "ADA@example.com"},
        context={
            "traits": {"email": "ada@example.com"},
            "externalIds": [
                {"id": "u-1", "type": "user_id"},
                {"id": "ada@example.com ", "type": "email"},
                {"id": "a", "type": "anonymous_id"},
                {"id": "L1", "type": "card"},
                {"id": "L1", "type": "card"},
            ],
        },
    )
    assert found == [
        ("user_id", "u-1"),
        ("email", "ada@example.com"),
        ("anonymous_id", "a"),
        ("card", "L1"),
    ]


def test_two_different_values_of_one_kind_are_both_returned() -> None:
    # Which one wins is the merge policy's call, not extraction's.
    found, _ = extract(user_id="u-1", context={"externalIds": [{"id": "u-2", "type": "user_id"}]})
    assert found == [("user_id", "u-1"), ("user_id", "u-2")]


def test_same_rejection_reported_once() -> None:
    _, rejected = extract(
        user_id="null", context={"externalIds": [{"id": "null", "type": "user_id"}]}
    )
    assert rejected == [Rejected("user_id", "null", "blocked value")]


# --- normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ada.Lovelace@Example.COM ", "ada.lovelace@example.com"),
        ("ada+news@mail.example.co.uk", "ada+news@mail.example.co.uk"),
    ],
)
def test_email_is_trimmed_and_lower_cased(raw: str, expected: str) -> None:
    assert normalise("email", raw, CONFIG) == expected


def test_an_email_is_one_value_whatever_the_unicode_form_of_its_accents() -> None:
    """ "é" typed as one character (NFC) or as "e" and a combining accent (NFD)."""
    nfc, nfd = "jos\u00e9@example.com", "jose\u0301@example.com"
    assert normalise("email", nfd, CONFIG) == normalise("email", nfc, CONFIG) == nfc
    assert normalise("email", " JOSE\u0301@Example.com", CONFIG) == nfc
    # Lower-cased, "İ" becomes "i" and a dot above, which NFC puts after a mark below.
    assert normalise("email", "\u0130\u0316@example.com", CONFIG) == "i\u0316\u0307@example.com"
    assert normalise("user_id", "jose\u0301", CONFIG) == "jose\u0301"  # ids are opaque


@pytest.mark.parametrize(
    "raw", ["ada", "ada@", "@example.com", "ada@localhost", "a@b@c.com", "ada @x.com", "a@x..com"]
)
def test_malformed_emails_are_refused(raw: str) -> None:
    with pytest.raises(InvalidIdentifier, match="not a valid email address"):
        normalise("email", raw, CONFIG)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("333 123 4567", "+393331234567"),  # Italian mobile, national format
        ("06 1234 5678", "+390612345678"),  # Italian landline keeps its leading 0
        ("0039 333 1234567", "+393331234567"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+1 (650) 253-0000", "+16502530000"),
        (3331234567, "+393331234567"),
    ],
)
def test_phone_is_e164(raw: object, expected: str) -> None:
    assert normalise("phone", raw, CONFIG) == expected


def test_a_call_naming_the_same_ids_again_gets_the_same_answer_of_its_own() -> None:
    """The answer for a set of ids is remembered, per config: each call gets its own lists
    (an alias call extends its identifiers), and another config is asked afresh."""
    first = extract_identifiers(
        type="track",
        user_id="u-1",
        anonymous_id="0",
        traits={},
        context={"traits": {"phone": "333 123 4567"}},
        config=CONFIG,
    )
    first.identifiers.append(Identifier(kind="anonymous_id", value="extra"))
    first.rejected.clear()
    found, rejected = extract(
        user_id="u-1", anonymous_id="0", context={"traits": {"phone": "333 123 4567"}}
    )
    assert found == [("user_id", "u-1"), ("phone", "+393331234567")]
    assert rejected == [Rejected("anonymous_id", "0", "blocked value")]
    uk = IdentityConfig(default_phone_region="gb")
    found, _ = extract(user_id="u-1", context={"traits": {"phone": "020 7946 0958"}}, config=uk)
    assert found == [("user_id", "u-1"), ("phone", "+442079460958")]
    found, _ = extract(user_id="u-1", context={"traits": {"phone": "020 7946 0958"}})
    assert ("phone", "+442079460958") not in found  # read as an Italian number


def test_remembered_answers_are_nothing_the_garbage_collector_walks() -> None:
    """The consumer runs full collections between batches: a full cache must not add to
    them (tuples of identifiers and text, untracked once the collector has seen them: a
    level of nesting per collection)."""
    for n in range(100):
        extract(user_id=f"u-{n}", anonymous_id="0", context={"traits": {"email": f"{n}@x.io"}})
    for _ in range(3):
        gc.collect()
    remembered = identifiers._EXTRACTED.answers(CONFIG)
    assert remembered
    assert not any(gc.is_tracked(e) for e in (*remembered, *remembered.values()))


def test_ids_that_only_compare_equal_are_not_taken_for_each_other() -> None:
    assert extract(user_id=1)[0] == [("user_id", "1")]
    assert extract(user_id=True)[0] == []  # True == 1, but is nobody's id
    assert extract(user_id="1")[0] == [("user_id", "1")]


def test_phone_region_is_configurable() -> None:
    uk = IdentityConfig(default_phone_region="gb")
    assert normalise("phone", "020 7946 0958", uk) == "+442079460958"
    with pytest.raises(ValueError, match="unknown phone region"):
        IdentityConfig(default_phone_region="XX")


@pytest.mark.parametrize("raw", ["12", "333", "+39 12", "not a phone", "+999 123456789"])
def test_invalid_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidIdentifier, match="not a valid phone number"):
        normalise("phone", raw, CONFIG)


def test_other_kinds_are_trimmed_but_keep_case_and_inner_spaces() -> None:
    assert normalise("user_id", "  Ada Lovelace ", CONFIG) == "Ada Lovelace"
    assert normalise("loyalty_card", "AbC-1", CONFIG) == "AbC-1"


def test_values_longer_than_255_characters_are_refused() -> None:
    assert normalise("user_id", "u" * 255, CONFIG) == "u" * 255
    with pytest.raises(InvalidIdentifier, match="longer than 255"):
        normalise("user_id", "u" * 256, CONFIG)
    with pytest.raises(InvalidIdentifier, match="longer than 255"):
        normalise("user_id", 10**1000, CONFIG)
    found, rejected = extract(user_id="u" * 5000)
    assert found == []
    assert len(rejected[0].raw) < 200  # the rejection does not carry the whole payload


@pytest.mark.parametrize("raw", ["a\x00b", "line\nbreak", "tab\there", "bad\ud800"])
def test_control_characters_are_refused(raw: str) -> None:
    with pytest.raises(InvalidIdentifier, match="control characters"):
        normalise("user_id", raw, CONFIG)


def test_normalise_kind() -> None:
    assert normalise_kind(" Loyalty-Card ") == "loyalty_card"
    assert normalise_kind("anonymousId") == "anonymous_id"
    with pytest.raises(InvalidIdentifier):
        normalise_kind(3)


# --- blocked values ----------------------------------------------------------------------

BLOCKED = [
    "",
    "   ",
    "null",
    "NULL",
    "undefined",
    "None",
    "nil",
    "0",
    "-1",
    "anonymous",
    "Guest",
    "[object Object]",
    "NaN",
    "unknown",
    "N/A",
    "000000",
    "----",
    "00000000-0000-0000-0000-000000000000",
    " undefined ",
    "test@test.com",
    "Example@Example.com",
    "noemail@noemail.com",
    "email@email.com",
]


@pytest.mark.parametrize("value", BLOCKED)
def test_blocked_values(value: str) -> None:
    assert is_blocked(value, CONFIG)
    for kind in ("user_id", "anonymous_id", "email", "crm_id", "device"):
        with pytest.raises(InvalidIdentifier, match="blocked value"):
            normalise(kind, value, CONFIG)


@pytest.mark.parametrize(
    "value", ["u-0", "100", "0a", "null@example.com", "guest-42", "ada@example.com"]
)
def test_ordinary_values_are_not_blocked(value: str) -> None:
    assert not is_blocked(value, CONFIG)


def test_blocked_values_never_reach_the_identifiers() -> None:
    found, rejected = extract(
        type="identify",
        user_id="undefined",
        anonymous_id="00000000-0000-0000-0000-000000000000",
        traits={"email": "test@test.com"},
    )
    assert found == []
    assert {(r.kind, r.reason) for r in rejected} == {
        ("user_id", "blocked value"),
        ("anonymous_id", "blocked value"),
        ("email", "blocked value"),
    }


def test_extra_blocked_values_from_config() -> None:
    config = IdentityConfig(extra_blocked_values=frozenset({" Placeholder ", "TEMP-USER"}))
    assert is_blocked("placeholder", config)
    assert is_blocked("temp-user ", config)
    assert not is_blocked("placeholder", CONFIG)
    found, _ = extract(user_id="Temp-User", anonymous_id="a", config=config)
    assert found == [("anonymous_id", "a")]


SWITCHBOARD = IdentityConfig(extra_blocked_values=frozenset({"+390212345678"}))


@pytest.mark.parametrize(
    "raw", ["+390212345678", "02 1234 5678", "+39 02 1234 5678", "0039 02 12345678", 390212345678]
)
def test_a_blocked_phone_number_is_blocked_however_an_event_spells_it(raw: object) -> None:
    """A company switchboard typed by many contacts: blocked once, in E.164."""
    with pytest.raises(InvalidIdentifier, match="blocked value"):
        normalise("phone", raw, SWITCHBOARD)
    found, rejected = extract(
        type="identify", anonymous_id="a1", traits={"phone": raw}, config=SWITCHBOARD
    )
    assert found == [("anonymous_id", "a1")]
    assert [(r.kind, r.reason) for r in rejected] == [("phone", "blocked value")]
    assert normalise("phone", "02 1234 5679", SWITCHBOARD) == "+390212345679"


def test_a_blocked_email_address_is_blocked_in_either_unicode_form() -> None:
    config = IdentityConfig(extra_blocked_values=frozenset({"jos\u00e9@example.com"}))
    with pytest.raises(InvalidIdentifier, match="blocked value"):
        normalise("email", "jose\u0301@example.com", config)
    config = IdentityConfig(extra_blocked_values=frozenset({"jose\u0301@example.com"}))
    with pytest.raises(InvalidIdentifier, match="blocked value"):
        normalise("email", "jos\u00e9@example.com", config)


def test_a_phone_number_blocked_in_a_national_spelling_is_blocked_in_the_default_region() -> None:
    milan = IdentityConfig(extra_blocked_values=frozenset({" 02 1234 5678 "}))
    with pytest.raises(InvalidIdentifier, match="blocked value"):
        normalise("phone", "+39 02 1234 5678", milan)
    london = IdentityConfig(
        default_phone_region="gb", extra_blocked_values=frozenset({"020 7946 0958"})
    )
    with pytest.raises(InvalidIdentifier, match="blocked value"):
        normalise("phone", "+44 20 7946 0958", london)
    assert normalise("phone", "+44 20 7946 0958", milan) == "+442079460958"
    assert normalise("user_id", "02 1234 5679", milan) == "02 1234 5679"
