"""edgevision: Pi-first person detection with a latency-adaptive MobileNet ladder and crash-safe recording.

The package reads like the pipeline: ``capture`` → ``inference`` → ``detection`` → ``pipeline`` → ``cli``.
"""

__version__ = "0.1.0"
