"""What sales staff change in HubSpot, seen by polls and app webhooks, for ``adapter.changes``."""

DELIVERY_KIND = "hubspot.delivery"
"""The outbox job that reads back the objects a webhook delivery names."""
