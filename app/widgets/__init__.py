"""Reusable widgets of BiT Studio's pages (each in a module of its own)."""
