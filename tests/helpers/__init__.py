"""Shared test helpers: real tools, started on loopback, never mocks."""
