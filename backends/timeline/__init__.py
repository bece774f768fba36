"""The timeline: every state change sfops observes across the backends, and every action from
the audit log, in one time-ordered view (issue #17).

- :mod:`backends.timeline.model` — a :class:`~backends.timeline.model.Change`, what one
  reading says (:class:`~backends.timeline.model.Observation`: facts compared between
  readings), and the pure step from the last stored state and a new reading to the changes.
- ``backends/<backend>/timeline.py`` — each backend's facts and how their changes read;
  :mod:`backends.timeline.derive` finds them (a backend without one is followed by its alerts).
- :mod:`backends.timeline.store` — the bounded SQLite store in ``state_dir``.
- :mod:`backends.timeline.observer` — the async writer (a worker thread) the TUI's poller and
  the CLI record through; observer spans, so a time nobody watched reads as a gap.
- :mod:`backends.timeline.view` — store events, audit records and gaps merged and filtered.
- :mod:`backends.timeline.capture` — the status before and after each action.
- :mod:`backends.timeline.export` — the incident bundle (Markdown + JSON).
"""
