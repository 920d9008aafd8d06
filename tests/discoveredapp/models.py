from django.db import models


class Note(models.Model):
    """Followed by a handler in ``handlers.py``, which no code of the app imports."""

    text = models.CharField(max_length=100)

    def __str__(self):
        return self.text
