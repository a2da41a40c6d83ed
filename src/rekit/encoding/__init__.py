"""Encoding stage: records -> marked text -> token ids with entity positions."""
