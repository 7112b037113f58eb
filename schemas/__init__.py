"""Marshmallow schemas: callbacks, Describe answers, the normalized event."""
