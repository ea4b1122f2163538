"""The experiments layer: the science check and the demo, on top of the product.

``teacher`` and ``pretrain`` pre-train the synthetic world's tiny CLIP teacher
(``launch/pretrain_teacher.py``); ``report`` aggregates base-to-novel results over seeds and
writes the report (``OUTPUT/science.json``, ``docs/science.md`` and its bar chart), ``sweep``
the learning-rate sweep's section and ``demo`` the demo's table. ``launch/experiment_b2n.py``
runs the experiment. This package may import ``shard_tools`` (the synthetic world) and
``kiclip.train``; nothing else in ``kiclip`` imports it (docs/CONTRACTS.md)."""

from kiclip.science.report import (
                                   METHODS,
                                   aggregate,
                                   check_claims,
                                   render_markdown,
                                   write_chart,
                                   write_report,
)

__all__ = ["METHODS", "aggregate", "check_claims", "render_markdown", "write_chart", "write_report"]
