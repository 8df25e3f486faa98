"""Distillation losses (torch implementations of the catalog entries)."""
