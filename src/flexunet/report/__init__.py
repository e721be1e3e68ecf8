"""The HTML report: dataset, curves, per-class tables, gallery and slice viewer."""
