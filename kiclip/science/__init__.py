"""The science check: aggregate base-to-novel results over seeds and write the report
(``OUTPUT/science.json``, ``docs/science.md`` and its bar chart). ``launch/experiment_b2n.py``
runs the experiment; this package only turns per-seed accuracies into the written report."""

from kiclip.science.report import (
                                   METHODS,
                                   aggregate,
                                   check_claims,
                                   render_markdown,
                                   write_chart,
                                   write_report,
)

__all__ = ["METHODS", "aggregate", "check_claims", "render_markdown", "write_chart", "write_report"]
