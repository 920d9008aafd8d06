from django.contrib import admin
from django.urls import path

from example_project.fundraising.views import email_events
from tests.testapp import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("documents/<int:pk>/title/", views.rename_document),
    path("documents/<int:pk>/title-async/", views.rename_document_async),
    path("webhooks/email-events/", email_events),
]
