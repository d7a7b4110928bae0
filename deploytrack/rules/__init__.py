"""Deployment rules: no-deploy windows, promotion order with soak time, one deployment at a time.

model.py (a rule and its validation), schedule.py (windows in time zones), engine.py (one rule
against one attempt), gate.py (judged inside the single writer during ingestion), store.py (SQL),
status.py (what is frozen now, for pages).
"""
