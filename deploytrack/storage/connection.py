"""The connection type every storage function takes: SQLite's or PostgreSQL's, with the same methods."""

from __future__ import annotations

from deploytrack.storage import postgres as pg
from deploytrack.storage import sqlite

Connection = sqlite.Connection | pg.Connection
