from django.contrib import admin
from django.urls import path

from tests.testapp import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("documents/<int:pk>/title/", views.rename_document),
    path("documents/<int:pk>/title-async/", views.rename_document_async),
]
