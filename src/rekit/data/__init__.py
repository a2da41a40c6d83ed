"""Data stage: every input format becomes a list of `Record`s."""

from rekit.data.schema import Entity, Record

__all__ = ["Entity", "Record"]
