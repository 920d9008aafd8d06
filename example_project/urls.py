"""URLs of the example project: the admin, the mailing webhook, the root -> the admin."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from example_project.fundraising.views import email_events

urlpatterns = [
    path("admin/", admin.site.urls),
    path("webhooks/email-events/", email_events, name="email-events"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
