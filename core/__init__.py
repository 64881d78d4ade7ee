"""Contracts shared by every tako package: types, errors and protocols. No I/O here."""
