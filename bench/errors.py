"""The one error a bench run stops on."""


class BenchError(RuntimeError):
    """The run cannot produce honest figures; the message says why."""
