"""A bad setting is one ``SETTING_INVALID`` error naming the variable, the value as the
user wrote it and what it accepts; a registry URL ending in ``/v1`` is refused with the
root to use instead, from ``WREG_URL`` and from ``Client(url=...)`` alike."""

from __future__ import annotations

import pickle

import pytest

from wreg import Client, InvalidInput, WregError
from wreg._config import EXPECTED, ClientSettings, SettingsError, registry_root
from wreg.core.errors import ErrorCode


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("WREG_CONCURRENCY", "abc"),
        ("WREG_CONCURRENCY", " 0x10"),
        ("WREG_CONCURRENCY", "300"),  # parses, out of range: still the value as written
        ("WREG_TIMEOUT", "-1"),
        ("WREG_INFLIGHT_BYTES", "1024"),
        ("WREG_FETCH_RUN_BYTES", "-5"),
        ("WREG_OFFLINE", "maybe"),
        ("WREG_CACHE_SHARED", "world"),
        ("WREG_CACHE_TRUSTED_UIDS", "root"),
    ],
)
def test_the_message_names_variable_value_and_what_it_accepts(var: str, raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        ClientSettings.from_env({var: raw})
    error = info.value
    accepts = EXPECTED[var.removeprefix("WREG_").lower()]
    assert str(error) == f"{var}={raw!r}: expected {accepts}"
    assert error.code is ErrorCode.SETTING_INVALID
    assert error.detail == {"variable": var, "value": raw, "expected": accepts}
    assert isinstance(error, InvalidInput)  # a WregError: `except WregError` catches it
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("suffix", ["/v1", "/v1/"])
def test_a_url_ending_in_v1_is_refused_with_its_root(suffix: str) -> None:
    url = "http://registry.example:8080" + suffix
    with pytest.raises(SettingsError) as info:
        ClientSettings.from_env({"WREG_URL": url})
    assert str(info.value) == (
        f"WREG_URL={url!r}: expected the registry's root URL, without /v1: "
        "'http://registry.example:8080'"
    )
    with pytest.raises(WregError) as raised:
        Client(url)
    assert raised.value.code is ErrorCode.SETTING_INVALID
    assert str(raised.value).startswith(f"url={url!r}: expected the registry's root URL")


def test_a_root_url_and_one_under_another_path_are_kept() -> None:
    assert registry_root("http://h:1/") == "http://h:1"
    assert registry_root("https://h/registry/") == "https://h/registry"
    assert registry_root("https://h/v1beta") == "https://h/v1beta"
    assert Client("http://h:1/").url == "http://h:1"


def test_a_settings_error_survives_pickling_as_its_code() -> None:
    with pytest.raises(SettingsError) as info:
        ClientSettings.from_env({"WREG_TIMEOUT": "soon"})
    back = pickle.loads(pickle.dumps(info.value))  # noqa: S301 - bytes we just made
    assert isinstance(back, InvalidInput)
    assert back.code is ErrorCode.SETTING_INVALID
    assert str(back) == str(info.value)
