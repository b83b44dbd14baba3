"""bookme-crm: BookMe bookings mapped onto a CRM through a transactional outbox."""

__version__ = "0.1.0"
