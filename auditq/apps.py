from django.apps import AppConfig


class AuditqConfig(AppConfig):
    name = "auditq"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from auditq import capture, checks, registry

        checks.register()
        for model in registry.audited_models():
            capture.connect(model)
