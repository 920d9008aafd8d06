from django.apps import AppConfig


class DiscoveredConfig(AppConfig):
    """An app whose ``ready()`` imports nothing: auditq finds its ``handlers`` module."""

    name = "tests.discoveredapp"
    label = "discoveredapp"
    default_auto_field = "django.db.models.BigAutoField"
