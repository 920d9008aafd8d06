from asgiref.sync import sync_to_async
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from tests.testapp.models import Document


@csrf_exempt
def rename_document(request, pk):
    document = Document.objects.get(pk=pk)
    document.title = request.POST["title"]
    document.save()
    return HttpResponse("ok")


@csrf_exempt
async def rename_document_async(request, pk):
    document = await Document.objects.aget(pk=pk)
    document.title = request.POST["title"]
    await sync_to_async(document.save)()
    return HttpResponse("ok")


@csrf_exempt
def retitle_in_a_task(request, pk):
    """Sends a task that makes the change; the response says the task's id."""
    from tests.testapp.tasks import retitle

    result = retitle.delay(pk, request.POST["title"])
    return HttpResponse(result.id)


@csrf_exempt
async def retitle_in_a_task_async(request, pk):
    from tests.testapp.tasks import retitle

    result = retitle.delay(pk, request.POST["title"])
    return HttpResponse(result.id)
