"""The ``swarmhub`` command line: thin commands over the library."""
