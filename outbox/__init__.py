"""A transactional outbox on SQLAlchemy: SQLite for one host, PostgreSQL for many.

Independent of the adapter: it stores opaque JSON payloads keyed by an
ordering key, and hands them out under leases.
"""
