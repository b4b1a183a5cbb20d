"""Preprocessing, one small module per concept (paper App. B)."""
