"""Backups: where they go, how they are taken, and what they are.

* :mod:`setec_core.backup.sink`: the :class:`BackupSink` interface that plugins
  implement (``s3://``, ``dir://``), and the rule for backup names.
* :mod:`setec_core.backup.loop`: taking backups: names, which backups are genuine,
  retention, and the server's background loop.
* :mod:`setec_core.backup.snapshot`: the backup file format.

The interface is importable from here (``from setec_core.backup import BackupSink``),
as plugin authors have always imported it.
"""

from setec_core.backup.sink import MAX_NAME_LENGTH, BackupSink, check_name, is_valid_name

__all__ = ["MAX_NAME_LENGTH", "BackupSink", "check_name", "is_valid_name"]
