"""The BentoML service. ``bentoml serve service:DigitClassifier`` serves it.

``DigitClassifier`` is imported on first use, so that ``service.imaging`` and friends can be used (and
tested) without a registered model: importing the service class checks the model store.
"""


def __getattr__(name: str):
    if name == "DigitClassifier":
        from service.service import DigitClassifier

        return DigitClassifier
    raise AttributeError(f"module 'service' has no attribute {name!r}")
