"""Transports and helpers for tests only: nothing a node reaches a real bank with."""
