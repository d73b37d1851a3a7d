"""Serializer fields shared by the API dialects."""

from __future__ import annotations

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
