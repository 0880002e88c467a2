"""Tests of the one formatter of validation errors (core.errors.format_validation_error)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from persona_collapse.core.errors import did_you_mean, format_validation_error


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_concurrency: int = Field(1, ge=1)


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: _Inner = _Inner()


def _error(model: type[BaseModel], data: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return info.value


def _keys_at(path: tuple[str | int, ...]) -> list[str] | None:
    models: dict[tuple[str | int, ...], type[BaseModel]] = {(): _Outer, ("inner",): _Inner}
    model = models.get(path)
    return list(model.model_fields) if model is not None else None


def test_an_unknown_key_is_reported_first_with_the_fix() -> None:
    # The misspelt key also leaves 'name' missing: the unknown key is the one to name.
    exc = _error(_Outer, {"nmae": "x"})
    assert format_validation_error(exc, source="s.yaml", keys_at=_keys_at) == (
        "s.yaml: field 'nmae': unknown key; did you mean 'name'? (allowed keys: inner, name)"
    )
    nested = _error(_Outer, {"name": "x", "inner": {"concurency": 2}})
    message = format_validation_error(nested, keys_at=_keys_at)
    assert message.startswith(
        "field 'inner.concurency': unknown key; did you mean 'max_concurrency'"
    )
    # Without the allowed keys: the fix is to remove it.
    assert format_validation_error(nested) == "field 'inner.concurency': unknown key; remove it"


def test_closed_lists_of_names_are_listed() -> None:
    exc = _error(_Inner, {"max_concurency": 2})
    assert format_validation_error(exc, what="parameter", known=["max_concurrency"]) == (
        "unknown parameter 'max_concurency'; known: max_concurrency; "
        "did you mean 'max_concurrency'?"
    )


def test_missing_and_invalid_values() -> None:
    missing = _error(_Outer, {})
    assert format_validation_error(missing) == "field 'name': Field required; add it"
    bad = _error(_Outer, {"name": "x", "inner": {"max_concurrency": 0}})
    assert format_validation_error(bad, prefix=("study",)) == (
        "field 'study.inner.max_concurrency': Input should be greater than or equal to 1 (got 0)"
    )


def test_root_model_levels_are_left_out() -> None:
    class Prices(RootModel[dict[str, _Inner]]):
        pass

    exc = _error(Prices, {"gpt": {"max_concurrency": "many"}})
    assert format_validation_error(exc).startswith("field 'gpt.max_concurrency': ")


def test_did_you_mean() -> None:
    assert did_you_mean("protocl", ["protocol", "personas"]) == "did you mean 'protocol'?"
    assert did_you_mean("zzz", ["protocol"]) is None
