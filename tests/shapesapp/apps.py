from django.apps import AppConfig


class ShapesConfig(AppConfig):
    name = "tests.shapesapp"
    label = "shapesapp"
    default_auto_field = "django.db.models.BigAutoField"
