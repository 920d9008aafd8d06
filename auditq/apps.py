from django.apps import AppConfig
from django.db.models import Model
from django.utils.module_loading import autodiscover_modules


class AuditqConfig(AppConfig):
    name = "auditq"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the consumers, sweepers and runners, import every app's ``handlers``
        module, and wire capture: the one place where the layers meet."""
        # Imported here: app loading imports this module before any model exists.
        from auditq import capture, checks, command_context, partitions, registry
        from auditq.capture import bulk
        from auditq.consumers import audit, callbacks, counters
        from auditq.delivery import recording, task_context
        from auditq.models import operation_runs_due
        from auditq.operations import executor, publishing
        from auditq.stream import outbox

        checks.register()
        task_context.connect()
        command_context.install()
        registry.add_consumer(audit.AuditConsumer())
        registry.add_consumer(callbacks.CallbacksConsumer())
        registry.add_consumer(counters.CountersConsumer())
        registry.add_sweeper(callbacks.publish_due)
        registry.add_sweeper(counters.sweep)
        registry.add_sweeper(publishing.publish_due)
        # Throttled to once an hour per process; nothing without AUDITQ['PARTITION'].
        registry.add_sweeper(partitions.upkeep)
        registry.add_runner(callbacks.RUN, callbacks.run)
        registry.add_runner(publishing.RUN, executor.run)
        operation_runs_due.connect(publishing.on_runs_due, dispatch_uid="auditq:runs-due")
        outbox.on_commit(recording.committed)
        # Every app's handlers.py, as the admin imports admin.py: a handler module that
        # nothing imported would never run, and nothing would say so.
        autodiscover_modules("handlers")
        bulk.install()
        for model in registry.tracked_models():
            capture.connect(model)
        counters.protect_parents()

        def wire(model: type[Model]) -> None:
            """A model tracked after start-up is wired as the others were."""
            capture.connect(model)
            counters.protect_parents()

        registry.on_tracked_late(wire)
