"""Device mesh, partition rules and multi-process start-up."""
