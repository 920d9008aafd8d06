from django.apps import AppConfig


class StallConfig(AppConfig):
    name = "tests.stallapp"

    def ready(self) -> None:
        from auditq import registry
        from tests.stallapp.consumer import StallConsumer

        registry.add_consumer(StallConsumer())  # after auditq's: the audit consumer runs first
