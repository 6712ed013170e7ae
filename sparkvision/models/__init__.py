"""Model families: one Task per registry entry (see ``base.Task``).

``REGISTRY`` is the one table from ``train.model`` to its Task; importing it is cheap
(TensorFlow is imported only when a Task builds or runs a model).
"""

from __future__ import annotations

from sparkvision.errors import did_you_mean
from sparkvision.models.attributes import AttributesTask, ClassifierTask
from sparkvision.models.base import Meta, ModelSpec, Task
from sparkvision.models.detector import DetectorTask
from sparkvision.models.fabric_ae import FabricAeTask
from sparkvision.models.face_embed import FaceEmbedTask
from sparkvision.models.vae import VaeTask

REGISTRY: dict[str, Task] = {
    task.name: task
    for task in (VaeTask(), AttributesTask(), ClassifierTask(), DetectorTask(), FabricAeTask(), FaceEmbedTask())
}


class UnknownTaskError(KeyError):
    """``get_task`` was given a name that is not in ``REGISTRY``."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_task(name: str) -> Task:
    """The registered Task called ``name``.

    Raises:
        UnknownTaskError: (a ``KeyError``) for an unknown name, naming the nearest valid one.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        hint = did_you_mean(name, sorted(REGISTRY), "models")
        raise UnknownTaskError(f"unknown model in train.model '{name}'{hint}") from None


__all__ = ["REGISTRY", "Meta", "ModelSpec", "Task", "UnknownTaskError", "get_task"]
