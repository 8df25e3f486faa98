"""Connector modules (torch implementations of the catalog entries)."""
