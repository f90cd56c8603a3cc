"""setec command-line programs: ``setec`` (client) and ``setec-serve`` (server)."""
