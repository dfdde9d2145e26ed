"""The example's URLs."""

from django.urls import path

from examples.django_app import views

urlpatterns = [
    path("add", views.enqueue_add),
    path("result/<str:result_id>", views.show_result),
]
