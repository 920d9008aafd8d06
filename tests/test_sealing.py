"""Sealing: values only a process with the same ``SECRET_KEY`` (or its fallbacks) opens."""

import datetime
import decimal

import pytest
from django.test import override_settings

from auditq.stream.sealing import SealError, scrub, seal, unseal


def test_sealed_values_open_again_and_cannot_be_read_meanwhile():
    token = seal({"pin": [None, "1234"]})

    assert "1234" not in token
    assert unseal(token) == {"pin": [None, "1234"]}
    assert seal({"pin": [None, "1234"]}) != token  # a fresh token each time


def test_after_a_rotation_the_old_key_in_the_fallbacks_still_opens():
    with override_settings(SECRET_KEY="old"):
        token = seal({"pin": ["1", "2"]})

    with override_settings(SECRET_KEY="new", SECRET_KEY_FALLBACKS=["old"]):
        assert unseal(token) == {"pin": ["1", "2"]}


def test_another_key_does_not_open_and_says_what_to_do():
    with override_settings(SECRET_KEY="old"):
        token = seal({"pin": ["1", "2"]})

    with (
        override_settings(SECRET_KEY="new", SECRET_KEY_FALLBACKS=["other"]),
        pytest.raises(SealError, match="sealed with another SECRET_KEY: list the old key in "),
    ):
        unseal(token)


@pytest.mark.parametrize("token", ["not a token", "", "é"])
def test_something_that_is_no_token_is_refused_the_same_way(token):
    with pytest.raises(SealError, match="SECRET_KEY_FALLBACKS"):
        unseal(token)


def test_a_token_altered_by_one_character_does_not_open():
    token = seal({"pin": [None, "1234"]})
    altered = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]

    with pytest.raises(SealError):
        unseal(altered)


def test_values_are_sealed_as_the_audit_trail_encodes_them():
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)

    assert unseal(seal({"at": [None, moment], "amount": [decimal.Decimal("1.10"), None]})) == {
        "at": [None, "2026-01-02T03:04:05+00:00"],
        "amount": ["1.10", None],
    }
    assert unseal(seal({"odd": [None, object]})) == {
        "odd": [None, {"repr": "<class 'object'>", "unencodable": True}]
    }


def test_integers_beyond_64_bits_come_back_exactly():
    assert unseal(seal({"big": [None, 2**70 + 1]})) == {"big": [None, 2**70 + 1]}


def test_scrub_writes_each_masked_value_as_the_mask():
    text = "pin 4711 rejected for card 4711-0000 (was 4711)"

    assert scrub(text, ["4711", "4711-0000", None]) == "pin *** rejected for card *** (was ***)"


def test_scrub_leaves_values_too_short_to_scrub_and_booleans_alone():
    assert scrub("no: 7 is not True", ["no", 7, True, ""]) == "no: 7 is not True"
    assert scrub("code 123", [123]) == "code ***"
