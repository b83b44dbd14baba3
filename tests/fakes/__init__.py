"""Fakes of external services that tests drive over real sockets."""
