"""A project's own command that makes an audited change: ``retitle PK TITLE``."""

from django.core.management.base import BaseCommand

from tests.testapp.models import Document


class Command(BaseCommand):
    help = "Rename a document."

    def add_arguments(self, parser):
        parser.add_argument("pk", type=int)
        parser.add_argument("title")

    def handle(self, pk, title, **options):
        document = Document.objects.get(pk=pk)
        document.title = title
        document.save()
        self.stdout.write(f"renamed {pk}")
