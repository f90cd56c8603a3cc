"""The plugins setec_core ships with, so that it works with no entry point installed.

* :mod:`setec_core.builtin.dev_key`: the ``dev://`` key provider (public key, for
  development and tests only);
* :mod:`setec_core.builtin.sqlite_storage`: ``sqlite://`` storage, the default store of
  :meth:`Database.open <setec_core.Database.open>`;
* :mod:`setec_core.builtin.memory_storage`: ``memory://`` storage, the store of
  :func:`setec_core.testing.new_database`.

They need nothing beyond the standard library and setec's own dependencies.
:func:`~setec_core.plugins.get_plugin_manager` registers :mod:`setec_core.builtin.plugin`,
which provides all three, as the plugin named ``builtin``, whether or not entry points
are loaded. They are ordinary plugins otherwise: a third-party plugin that claims their
names or schemes is refused, naming both. Plugins that need an SDK or make policy
(cloud KMS, S3, authorizers) are in ``setec_plugins``.

This package imports nothing itself: import the module you need.
"""
