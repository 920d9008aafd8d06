from django.contrib import admin
from django.urls import path

from example_project.fundraising.views import email_events
from tests.testapp import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("documents/<int:pk>/title/", views.rename_document),
    path("documents/<int:pk>/title-async/", views.rename_document_async),
    path("documents/<int:pk>/title-in-a-task/", views.retitle_in_a_task),
    path("documents/<int:pk>/title-in-a-task-async/", views.retitle_in_a_task_async),
    path("webhooks/email-events/", email_events),
]
