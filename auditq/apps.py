from django.apps import AppConfig


class AuditqConfig(AppConfig):
    name = "auditq"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from auditq import capture, checks, operations, registry
        from auditq.consumers import callbacks, counters
        from auditq.consumers.audit import AuditConsumer

        checks.register()
        registry.add_consumer(AuditConsumer())
        registry.add_consumer(callbacks.CallbacksConsumer())
        registry.add_consumer(counters.CountersConsumer())
        registry.add_sweeper(callbacks.publish_due)
        registry.add_sweeper(counters.sweep)
        registry.add_sweeper(operations.publish_due)
        for model in registry.tracked_models():
            capture.connect(model)
        counters.protect_parents()
