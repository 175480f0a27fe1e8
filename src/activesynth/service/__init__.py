"""The annotation service (``activesynth serve``): people as the oracle of the active loop.

- :mod:`.db`: SQLAlchemy models, engine factory, Alembic migrations.
- :mod:`.store`: image and label files written atomically with their rows; import; orphans.
- :mod:`.worker`: background suggestion scores, training runs, the published model.
- :mod:`.app`: ``create_app(settings)``, MONAI Label's REST contract and ``/api/v1``.
- :mod:`.jobs`: the job process (``suggest`` on a snapshot of the datastore).

Needs the ``service`` extra (``pip install -e ".[service]"``).
"""
