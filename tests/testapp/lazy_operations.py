"""An operation whose module nothing imports at start-up: a worker finds it by the path
of the step a run waits for."""

from auditq import Operation


def only_step(step):
    step.set("found", True)


lazy = Operation("tests.lazy", main=[only_step])
