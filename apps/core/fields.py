"""Serializer fields shared by the API dialects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from .jsonbody import first_surrogate


class FastSurrogateValidator(ProhibitSurrogateCharactersValidator):
    """DRF's check, by one regular-expression search instead of a Python loop per character
    (a 10 MB prompt took a third of a second of CPU before its length was even refused)."""

    def __call__(self, value: Any) -> None:
        found = first_surrogate(str(value))
        if found is not None:
            raise serializers.ValidationError(
                self.message.format(code_point=ord(found)), code=self.code
            )


class TextField(serializers.CharField):
    """``CharField`` whose validation time stays small for a huge value."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators = [
            FastSurrogateValidator()
            if isinstance(validator, ProhibitSurrogateCharactersValidator)
            else validator
            for validator in self.validators
        ]


# A request serializer that refuses keys it does not know instead of dropping them: a
# misspelt or unsupported field would otherwise be ignored silently and the request would do
# something the caller did not ask for. The error names the field and lists the accepted ones.
# (A comment, not a docstring: the OpenAPI schema would show a docstring as the description of
# every serializer that has none of its own.)
class StrictFieldsMixin:
    fields: Any

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = [name for name, field in self.fields.items() if not field.read_only]
            unknown = [key for key in data if key not in writable]
            if unknown:
                accepted = ", ".join(writable)
                raise serializers.ValidationError(
                    {
                        str(key): [f"Unknown field '{key}'; this request accepts: {accepted}."]
                        for key in unknown
                    }
                )
        return super().to_internal_value(data)  # type: ignore[misc]
