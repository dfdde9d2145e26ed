"""Two views: one enqueues a task, the other reads its result."""

from django.http import HttpRequest, JsonResponse

from examples.django_app.tasks import add


def enqueue_add(request: HttpRequest) -> JsonResponse:
    result = add.enqueue(int(request.GET.get("a", 0)), int(request.GET.get("b", 0)))
    return JsonResponse({"id": result.id, "status": result.status, "result": f"/result/{result.id}"})


def show_result(request: HttpRequest, result_id: str) -> JsonResponse:
    result = add.get_result(result_id)  # TaskResultDoesNotExist for an unknown id
    value = result.return_value if result.status == "SUCCESSFUL" else None
    return JsonResponse({"id": result.id, "status": result.status, "return_value": value})
