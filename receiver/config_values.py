"""Typed values read from an environment mapping; a bad one raises `ConfigError` naming its variable.

`receiver.config` decides which variables exist and what they mean; this
module only knows how a number, a URL, a list or a yes/no is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


class EnvironmentReader:
    """Reads typed values from an environment mapping, naming the variable on error."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def raw(self, name: str) -> str | None:
        """The stripped value; None when unset or blank (a blank variable means its default)."""
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def _float(self, name: str, kind: str) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected {kind}, got {value!r}") from None

    def fraction(self, name: str, default: float) -> float:
        """A number in (0, 1]."""
        number = self._float(name, "a number")
        if number is None:
            return default
        if not 0 < number <= 1:
            raise ConfigError(f"{name}: must be more than 0 and at most 1, got {self.raw(name)}")
        return number

    def seconds(self, name: str, default: float, minimum: float) -> float:
        number = self._float(name, "a number of seconds")
        if number is None:
            return default
        # Written so that NaN fails too: every comparison with NaN is false.
        if not number >= minimum or number == float("inf"):
            raise ConfigError(f"{name}: must be a finite number of at least {minimum}, got {self.raw(name)}")
        return number

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return default if value is None else value

    def integer(self, name: str, default: int | None, minimum: int = 0) -> int | None:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{name}: must be at least {minimum}, got {number}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigError(f"{name}: expected true or false, got {value!r}")

    def secret_list(self, name: str) -> tuple[str, ...]:
        """A comma-separated list of secrets; set but holding an empty item is an error."""
        value = self.raw(name)
        if value is None:
            return ()
        items = [item.strip() for item in value.split(",")]
        if any(not item for item in items):
            # Never echo the value: it holds secrets.
            raise ConfigError(f"{name}: contains an empty key (check for stray commas)")
        return tuple(items)

    def plain_list(self, name: str) -> tuple[str, ...]:
        """A comma-separated list; empty items are dropped (not secrets: a stray comma harms nothing)."""
        value = self.raw(name)
        if value is None:
            return ()
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ConfigError(
                f"{name}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
                f" and naming a host, got {value!r}"
            )
        return value
