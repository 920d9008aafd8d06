from django.apps import AppConfig


class FundraisingConfig(AppConfig):
    name = "example_project.fundraising"
    label = "fundraising"
    verbose_name = "Fundraising"
    default_auto_field = "django.db.models.BigAutoField"
