from django.apps import AppConfig


class FundraisingConfig(AppConfig):
    name = "example_project.fundraising"
    label = "fundraising"
    verbose_name = "Fundraising"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import handlers, operations  # noqa: F401  (registers handlers, operations)
