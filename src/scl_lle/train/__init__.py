"""Training: one YAML experiment file (config) runs the SCL-LLE objective on synthetic low-light street scenes.

- ``config``: every setting and its default (``DEFAULTS``, the one source), files, overrides;
- data: ``datasets`` (labelled layouts on disk), ``pools`` (images held on the device), ``synthesis`` (darkening),
  ``data`` (the batch of a step, built from the ``data`` section);
- objective: ``terms`` (the losses as functions), ``losses`` (their module forms), ``objective`` (the weighted sum,
  built from the ``loss`` section);
- loop: ``trainer`` (``train``, ``Trainer``), with ``optim`` (schedule, AMP), ``exposure`` (exposure-aware scoring),
  ``checkpoints``, ``validation`` and ``runlog``.
"""
