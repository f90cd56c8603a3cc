"""The default setec plugins, registered through the ``setec`` entry-point group."""
